"""The reproduction script trains the grid once, resumes finished runs, and prints the table."""

import subprocess
import sys

from tests.conftest import ROOT


def test_reproduce_trains_then_resumes(tmp_path):
    args = [sys.executable, "-m", "ssvae_core", "reproduce", "--dataset", "digits", "--models", "m2,m1m2",
            "--labels", "50", "--seeds", "0,1", "--epochs", "2", "--m1-epochs", "2", "--hidden", "32",
            "--z-dim", "4", "--m1-hidden", "32", "--m1-z-dim", "8", "--device", "cpu", "--out", str(tmp_path)]
    first = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("done in") == 4 and "== M1 (shared" in first.stdout
    assert {p.name for p in tmp_path.iterdir()} == {"m1", "m2-n50-s0", "m2-n50-s1", "m1m2-n50-s0", "m1m2-n50-s1"}
    second = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("finished earlier") == 4 and "done in" not in second.stdout
    table = second.stdout.split("model chosen on validation")[1]
    assert "M2" in table and "M1+M2" in table and "11.97" not in table  # N=50 has no paper figure
    # the same table both times: resuming reads the recorded results
    assert first.stdout.split("model chosen on validation")[1] == table
    rows = table.split("device\n")[1].splitlines()
    assert len(rows) == 2 and all(r.endswith("  cpu") for r in rows)  # new runs record their wall time: no '*'


def test_restarts_keep_the_init_with_the_lowest_validation_error(tmp_path):
    import json

    args = [sys.executable, "-m", "ssvae_core", "reproduce", "--dataset", "digits", "--models", "m2", "--labels", "50",
            "--seeds", "0", "--restarts", "3", "--epochs", "2", "--hidden", "32", "--z-dim", "4", "--device", "cpu",
            "--out", str(tmp_path)]
    first = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert first.returncode == 0, first.stderr
    names = ["m2-n50-s0", "m2-n50-s0-i1", "m2-n50-s0-i2"]
    assert {p.name for p in tmp_path.iterdir()} == set(names) and first.stdout.count("done in") == 3
    metas = [json.loads((tmp_path / name / "run.json").read_text()) for name in names]
    assert [m["config"]["init"] for m in metas] == [0, 1, 2]
    best = min(range(3), key=lambda i: metas[i]["best"]["val_error"])
    assert f"keeping {tmp_path / names[best]}" in first.stdout
    row = first.stdout.split("device\n")[1].splitlines()[0].split()
    assert row[:3] == ["M2", "50", f"{metas[best]['best']['test_error']:.2f}"] and row[5] == "1×3"
    again = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert again.stdout.count("finished earlier") == 3 and "done in" not in again.stdout


def test_a_finished_run_with_other_settings_is_neither_reused_nor_overwritten(tmp_path):
    args = [sys.executable, "-m", "ssvae_core", "reproduce", "--dataset", "digits", "--models", "m2", "--labels", "50",
            "--seeds", "0", "--hidden", "32", "--z-dim", "4", "--device", "cpu", "--out", str(tmp_path)]
    first = subprocess.run([*args, "--epochs", "1"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert first.returncode == 0, first.stderr
    saved = (tmp_path / "m2-n50-s0" / "run.json").read_bytes()
    again = subprocess.run([*args, "--epochs", "2", "--lr", "0.01"], capture_output=True, text=True, cwd=ROOT,
                           timeout=600)
    assert again.returncode == 1 and "done in" not in again.stdout
    from ssvae_core.recipes import RECIPE

    lr = RECIPE["m2"]["lr"]  # the first run's, from the recipe
    assert f"m2-n50-s0 was trained with other settings: epochs 1 (asked 2), lr {lr} (asked 0.01)" in again.stdout
    assert (tmp_path / "m2-n50-s0" / "run.json").read_bytes() == saved


def test_epochs_to_paper_reads_the_history():
    from ssvae_core.reproduce import _to_paper, epochs_to

    hist = [{"stage": "m1", "epoch": 1, "test_error": 1.0},  # M1 stage of M1+M2: not counted
            {"stage": "m1m2", "epoch": 1, "test_error": 9.0}, {"stage": "m1m2", "epoch": 2, "test_error": 3.3},
            {"stage": "m1m2", "epoch": 3, "test_error": 3.0}]
    assert epochs_to(hist, "m1m2", 3.33) == 2
    assert epochs_to(hist, "m1m2", 2.0) is None and epochs_to(hist, "m1m2", None) is None
    assert _to_paper([{"to_paper": 2}, {"to_paper": 4}]) == "3"
    assert _to_paper([{"to_paper": 2}, {"to_paper": None}]) == "2 (1/2)"
    assert _to_paper([{"to_paper": None}]) == "-"


def test_table_marks_times_that_left_out_evaluation():
    """Runs saved before evaluation was timed report training steps only; their rows say so with '*'."""
    from ssvae_core.checkpoints import wall
    from ssvae_core.reproduce import table

    assert wall({"train_seconds": 10.0, "wall_seconds": 12.5}) == (12.5, True)
    assert wall({"train_seconds": 10.0}) == (10.0, False)
    row = {"model": "m1m2", "labels": 100, "seed": 0, "test_error": 3.2, "best_epoch": 9, "epochs": 10,
           "to_paper": None, "seconds": 12.0, "wall": True, "device": "cpu"}
    timed = table([row, {**row, "seed": 1, "test_error": 3.4}]).splitlines()[1]
    assert timed.endswith(" 12  cpu")
    old = table([row, {**row, "seed": 1, "seconds": 8.0, "wall": False}]).splitlines()[1]
    assert old.endswith(" 10* cpu")  # the mean of 12 and 8


def test_a_stopped_run_ends_the_whole_grid(tmp_path):
    """SIGTERM stops the run in progress, saves it as stopped, and does not go on to the next run."""
    import os
    import signal

    args = [sys.executable, "-m", "ssvae_core", "reproduce", "--dataset", "digits", "--models", "m2",
            "--labels", "50", "--seeds", "0,1", "--epochs", "500", "--hidden", "32", "--z-dim", "4",
            "--device", "cpu", "--out", str(tmp_path / "runs")]
    with open(tmp_path / "stderr.txt", "w") as err:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        out = []
        for line in proc.stdout:  # the first run is training: stop the whole command
            out.append(line)
            if "[m2] epoch" in line:
                proc.send_signal(signal.SIGTERM)
                break
        out.append(proc.stdout.read())
        proc.wait(timeout=120)
    out = "".join(out)
    assert proc.returncode == 1, (tmp_path / "stderr.txt").read_text()
    assert "Stopped." in out and "seed=1" not in out
    assert {p.name for p in (tmp_path / "runs").iterdir()} == {"m2-n50-s0"}  # saved, marked stopped


def test_reproduce_goes_on_with_a_stopped_run_from_its_last_finished_epoch(tmp_path, monkeypatch, capsys):
    """Run again, reproduce resumes the stopped run instead of training it from scratch."""
    import json

    from ssvae_core import runner
    from ssvae_core.cli import main

    args = ["reproduce", "--dataset", "digits", "--models", "m2", "--labels", "50", "--seeds", "0", "--epochs", "4",
            "--hidden", "32", "--z-dim", "4", "--device", "cpu", "--out", str(tmp_path)]
    real = runner.Trainer.epochs

    def stop_after_two(self, on_batch=None):  # as a Ctrl-C or `kill` after epoch 2 would
        for rec in real(self, on_batch):
            yield rec
            if len(self.history) == 2:
                self.stop()

    monkeypatch.setattr(runner.Trainer, "epochs", stop_after_two)
    assert main(args) == 1 and "Stopped." in capsys.readouterr().out
    monkeypatch.setattr(runner.Trainer, "epochs", real)
    trained, real_run_epoch = [], runner.Trainer.run_epoch

    def counted(self, st, *a, **k):
        trained.append(st.epoch + 1)
        return real_run_epoch(self, st, *a, **k)

    monkeypatch.setattr(runner.Trainer, "run_epoch", counted)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and trained == [3, 4]  # epochs 1 and 2 were not trained again
    meta = json.loads((tmp_path / "m2-n50-s0" / "run.json").read_text())
    assert meta["state"] == "done" and [h["epoch"] for h in meta["history"]] == [1, 2, 3, 4]


def _reproduce_args(*flags: str):
    import argparse

    from ssvae_core import reproduce

    parser = argparse.ArgumentParser()
    reproduce.add_parser(parser.add_subparsers())
    return parser.parse_args(["reproduce", *flags])


def test_each_model_takes_its_own_recipe_unless_a_flag_is_given():
    from ssvae_core.flags import config_from_args
    from ssvae_core.recipes import RECIPE
    from ssvae_core.reproduce import _with_recipe

    assert RECIPE["m2"]["hidden"] != RECIPE["m1m2"]["hidden"]  # else this test could not tell them apart
    a = _reproduce_args()
    for model in ("m2", "m1m2", "supervised"):
        cfg = config_from_args(_with_recipe(a, model), model, 100, 0, "mnist")
        assert (cfg.epochs, cfg.lr, cfg.lr_final, cfg.model.hidden, cfg.kl_warmup) == tuple(
            RECIPE[model][k] for k in ("epochs", "lr", "lr_final", "hidden", "kl_warmup"))
    assert config_from_args(_with_recipe(a, "m1"), "m1", 100, 0, "mnist").kl_warmup == RECIPE["m1"]["kl_warmup"] > 0
    given = _reproduce_args("--hidden", "32", "--epochs", "3")
    cfg = config_from_args(_with_recipe(given, "m2"), "m2", 100, 0, "mnist")
    assert (cfg.model.hidden, cfg.epochs, cfg.lr) == ([32], 3, RECIPE["m2"]["lr"])


def test_the_m2_recipe_moves_its_labelled_images_on_mnist_only():
    from ssvae_core.flags import config_from_args
    from ssvae_core.recipes import RECIPE, recipe_settings
    from ssvae_core.reproduce import _with_recipe

    assert RECIPE["m2"]["shift"] > 0 and recipe_settings("m2", 100)["shift"] == RECIPE["m2"]["shift"]
    assert all(recipe_settings(m, 100)["shift"] == 0 for m in ("m1", "m1m2", "supervised"))
    for dataset, shift in (("mnist", RECIPE["m2"]["shift"]), ("digits", 0)):
        a = _reproduce_args("--dataset", dataset)
        assert config_from_args(_with_recipe(a, "m2"), "m2", 100, 0, dataset).shift == shift
        assert recipe_settings("m2", 100, dataset=dataset)["shift"] == shift
    given = _reproduce_args("--dataset", "digits", "--shift", "1")  # a flag given still wins
    assert config_from_args(_with_recipe(given, "m2"), "m2", 100, 0, "digits").shift == 1


def test_m1m2_stage_runs_longer_from_1000_labels_unless_epochs_are_given():
    from ssvae_core.flags import config_from_args
    from ssvae_core.recipes import LONGER_STAGE, RECIPE, recipe_settings
    from ssvae_core.reproduce import _with_recipe

    n_from, longer = LONGER_STAGE["m1m2"]
    assert longer != RECIPE["m1m2"]["epochs"]  # else this test could not tell them apart
    a = _reproduce_args()
    epochs = {n: config_from_args(_with_recipe(a, "m1m2", n), "m1m2", n, 0, "mnist").epochs
              for n in (100, 600, 1000, 3000)}
    assert epochs == {n: longer if n >= n_from else RECIPE["m1m2"]["epochs"] for n in epochs}
    assert epochs[1000] == epochs[3000] == 200 and epochs[100] == epochs[600] == 150  # as in the README's table
    assert config_from_args(_with_recipe(a, "m2", 3000), "m2", 3000, 0, "mnist").epochs == RECIPE["m2"]["epochs"]
    given = _reproduce_args("--epochs", "150")  # a flag still wins: the README's 150-epoch rows at N=1000/3000
    assert config_from_args(_with_recipe(given, "m1m2", 3000), "m1m2", 3000, 0, "mnist").epochs == 150
    assert recipe_settings("m1m2", 1000)["epochs"] == longer and recipe_settings("m1m2", 100)["epochs"] == 150


def test_reproduce_takes_each_label_budgets_recipe(tmp_path, monkeypatch, capsys):
    import json

    from ssvae_core import recipes
    from ssvae_core.cli import main

    monkeypatch.setitem(recipes.RECIPE, "m2", {**recipes.RECIPE["m2"], "epochs": 1, "hidden": [32]})
    monkeypatch.setitem(recipes.LONGER_STAGE, "m2", (100, 2))  # a longer run from N=100 on, for this test
    assert main(["reproduce", "--dataset", "digits", "--models", "m2", "--labels", "50,100", "--seeds", "0",
                 "--z-dim", "4", "--device", "cpu", "--out", str(tmp_path)]) == 0
    epochs = {n: json.loads((tmp_path / f"m2-n{n}-s0" / "run.json").read_text())["config"]["epochs"] for n in (50, 100)}
    assert epochs == {50: 1, 100: 2}


def test_restarts_and_init_must_be_counts(capsys):
    import pytest

    from ssvae_core.cli import main

    with pytest.raises(SystemExit):
        _reproduce_args("--restarts", "0")
    assert "--restarts: must be at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--init", "-1"])
    assert "--init: must be at least 0, got -1" in capsys.readouterr().err
    assert _reproduce_args("--restarts", "3").restarts == 3
