"""The CLI as a user runs it: train writes a run, eval reproduces its test error, list shows it."""

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def cli(*args, timeout=600):
    r = subprocess.run([sys.executable, "-m", "ssvae_core", *args], capture_output=True, text=True,
                       timeout=timeout, cwd=ROOT)
    return r


def recorded_and_reproduced(out: str):
    m = re.search(r"test error ([\d.]+)%\s+\(recorded at training: ([\d.]+)%\)", out)
    assert m, out
    return float(m.group(1)), float(m.group(2))


def test_help_lists_every_flag():
    r = cli("train", "--help")
    assert r.returncode == 0
    for flag in ("--model", "--dataset", "--labels", "--epochs", "--seed", "--device", "--out", "--data-dir"):
        assert flag in r.stdout


def test_train_eval_list_on_digits(tmp_path):
    out = tmp_path / "checkpoints" / "m2-digits"
    r = cli("train", "--model", "m2", "--dataset", "digits", "--labels", "50", "--epochs", "3", "--lr", "3e-3",
            "--hidden", "64", "--z-dim", "8", "--device", "cpu", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "[m2] epoch   3" in r.stdout and f"Saved {out}" in r.stdout
    assert (out / "model.pt").is_file() and (out / "run.json").is_file()
    r = cli("eval", str(out), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    test, recorded = recorded_and_reproduced(r.stdout)
    assert test == pytest.approx(recorded, abs=0.01)
    assert "confusion matrix" in r.stdout
    gen = float(re.search(r"argmax_y L\(x,y\).*validation error ([\d.]+)%", r.stdout).group(1))
    assert 0.0 <= gen <= 100.0
    r = cli("list", "--root", str(tmp_path / "checkpoints"))
    assert "m2 digits N=50" in r.stdout


def test_bad_label_budget_and_broken_run_give_messages(tmp_path):
    r = cli("train", "--dataset", "digits", "--labels", "15", "--epochs", "1")
    assert r.returncode == 2 and "multiple of 10" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "run.json").write_text("{}")
    r = cli("eval", str(tmp_path))
    assert r.returncode == 2 and "not an ssvae run" in r.stderr


@pytest.mark.slow
def test_real_mnist_m2_run_and_eval_agree(mnist_root, tmp_path):
    """A real CLI run on MNIST with 100 labels (M2, 1 epoch, CPU) saves, and eval reproduces its test error."""
    out = tmp_path / "m2-mnist"
    r = cli("train", "--model", "m2", "--labels", "100", "--epochs", "1", "--device", "cpu",
            "--data-dir", str(mnist_root), "--out", str(out), timeout=900)
    assert r.returncode == 0, r.stderr
    assert re.search(r"validation error [\d.]+%\s+test error [\d.]+%", r.stdout)
    r = cli("eval", str(out), "--data-dir", str(mnist_root), "--device", "cpu")
    test, recorded = recorded_and_reproduced(r.stdout)
    assert test == pytest.approx(recorded, abs=0.01) and test < 50.0


def test_sigterm_stops_between_batches_and_saves_best(tmp_path):
    import json
    import signal

    out = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "ssvae_core", "train", "--model", "supervised", "--dataset",
                          "digits", "--labels", "50", "--epochs", "100000", "--hidden", "16", "--device", "cpu",
                          "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    for line in p.stdout:  # wait for the first finished epoch
        if "epoch" in line:
            break
    p.send_signal(signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 0, stderr
    assert "Terminated" in stderr and f"Saved {out}" in stdout
    meta = json.loads((out / "run.json").read_text())
    assert meta["stopped"] is True and meta["best"]["epoch"] >= 1


def test_export_half_then_eval_reproduces(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "pretrained" / "m2"
    assert cli("train", "--model", "m2", "--dataset", "digits", "--labels", "50", "--epochs", "2", "--hidden", "32",
               "--z-dim", "4", "--device", "cpu", "--out", str(src)).returncode == 0
    r = cli("export", str(src), str(dst))
    assert r.returncode == 0, r.stderr
    assert (dst / "model.pt").stat().st_size < 0.6 * (src / "model.pt").stat().st_size
    test, recorded = recorded_and_reproduced(cli("eval", str(dst), "--device", "cpu").stdout)
    assert test == pytest.approx(recorded, abs=0.01)


def test_m1m2_takes_its_m1_stage_settings_from_their_own_flags(tmp_path):
    import json

    out = tmp_path / "m1m2"
    r = cli("train", "--model", "m1m2", "--dataset", "digits", "--labels", "50", "--epochs", "1", "--m1-epochs", "1",
            "--lr", "2e-3", "--m1-lr", "5e-3", "--m1-kl-warmup", "3", "--hidden", "32", "--m1-hidden", "32",
            "--device", "cpu", "--out", str(out))
    assert r.returncode == 0, r.stderr
    meta = json.loads((out / "run.json").read_text())
    assert (meta["config"]["m1_lr"], meta["config"]["m1_kl_warmup"], meta["config"]["m1_lr_final"]) == (5e-3, 3.0, None)
    assert [(h["stage"], h["lr"]) for h in meta["history"]] == [("m1", 5e-3), ("m1m2", 2e-3)]


@pytest.mark.slow
def test_m1m2_recipe_starts_from_the_shipped_m1_and_says_so(mnist_root, tmp_path):
    """`train --model m1m2 --recipe` on MNIST uses the shipped, label-free M1 by default; --fresh-m1 would not."""
    import torch

    from ssvae_core.checkpoints import load_run
    from ssvae_core.recipes import SHIPPED_M1

    out = tmp_path / "m1m2"
    r = cli("train", "--model", "m1m2", "--labels", "100", "--seed", "8", "--recipe", "--epochs", "1",
            "--device", "cpu", "--data-dir", str(mnist_root), "--out", str(out), timeout=900)
    assert r.returncode == 0, r.stderr
    assert f"M1: {SHIPPED_M1} (shipped" in r.stdout
    run, m1 = load_run(out), load_run(ROOT / SHIPPED_M1).model
    assert run.meta["m1_run"] == SHIPPED_M1 and run.cfg.epochs == 1 and run.cfg.model.hidden == [500]
    assert all(torch.equal(v, run.model.m1.state_dict()[k]) for k, v in m1.state_dict().items())


def test_m1m2_from_the_shipped_clusters_names_them_with_its_labels_and_says_so(mnist_root, tmp_path):
    """`--m1-run` on the shipped label-free clusters: the run takes their M1 and stage sizes, names the clusters with
    its own labels (a draw the clusters never saw named), and is far past chance after one epoch."""
    from ssvae_core.checkpoints import load_run
    from ssvae_core.recipes import FROM_CLUSTERS, SHIPPED_CLUSTERS

    out = tmp_path / "m1m2"
    r = cli("train", "--model", "m1m2", "--labels", "100", "--seed", "8", "--recipe", "--epochs", "1",
            "--m1-run", SHIPPED_CLUSTERS, "--device", "cpu", "--data-dir", str(mnist_root), "--out", str(out),
            timeout=900)
    assert r.returncode == 0, r.stderr
    assert f"M1 and clusters: {SHIPPED_CLUSTERS} (label-free" in r.stdout
    run, clusters = load_run(out), load_run(ROOT / SHIPPED_CLUSTERS)
    assert run.meta["m1_run"] == SHIPPED_CLUSTERS and run.cfg.model.z_dim == clusters.cfg.model.z_dim
    assert run.cfg.ema == FROM_CLUSTERS["ema"] and f"--ema {FROM_CLUSTERS['ema']}" in r.stdout  # its recipe
    assert run.cfg.alpha == FROM_CLUSTERS["alpha"] and f"--alpha {FROM_CLUSTERS['alpha']}" in r.stdout
    assert run.meta["best"]["val_error"] < 10.0  # chance is 90%


def test_label_free_applies_to_m1m2_only():
    r = cli("train", "--model", "m2", "--dataset", "digits", "--label-free", "--epochs", "1")
    assert r.returncode == 2 and "--label-free trains M1+M2's stage" in r.stdout


def test_a_piped_log_has_one_line_per_epoch_and_no_progress_bar_frames(tmp_path):
    r = cli("train", "--model", "m2", "--dataset", "digits", "--labels", "50", "--epochs", "3", "--hidden", "32",
            "--device", "cpu", "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    log = r.stdout + r.stderr  # both are pipes here, as in `train ... > log 2>&1`
    assert "\r" not in log and "batch/s" not in log and "it/s" not in log
    assert [line.split()[2] for line in log.splitlines() if line.startswith("[m2] epoch")] == ["1", "2", "3"]
