"""reproduce --ray gives the sequential table, a killed worker's run goes on from its last epoch, and the sweep
chooses on validation with ASHA stopping hopeless trials; without Ray, --ray says how to install it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.test_resume import same_history

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="ray is not installed (pip install -r requirements-ray.txt)")
GRID = ["--dataset", "digits", "--models", "m2", "--labels", "50", "--seeds", "0,1", "--epochs", "4",
        "--hidden", "32", "--z-dim", "4", "--device", "cpu"]
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # as in a one-core Ray task: the same sums, the same numbers

DYING = """
import os, pathlib, signal, sys
from ssvae_core import cluster
MARKER, LOG = sys.argv[1], sys.argv[2]
real_task = cluster.train_task

def dying_task(*args, **kw):  # runs in a Ray worker: the first time seed 0 saves epoch 2, its worker is killed
    from ssvae_core import runner
    if runner.save_progress.__name__ != "save_then_die":  # a worker runs several tasks: wrap once
        save = runner.save_progress
        def save_then_die(trainer, out, extra=None):
            save(trainer, out, extra)
            name, epoch = pathlib.Path(out).name, trainer.history[-1]["epoch"]
            with open(LOG, "a") as f:
                f.write(f"{name} {os.getpid()} {epoch}\\n")
            if name == "m2-n50-s0" and epoch == 2 and not os.path.exists(MARKER):
                pathlib.Path(MARKER).write_text("killed")
                os.kill(os.getpid(), signal.SIGKILL)
        runner.save_progress = save_then_die
    return real_task(*args, **kw)

cluster.train_task = dying_task
from ssvae_core.cli import main
sys.exit(main(sys.argv[3:]))
"""


def table_without_times(stdout: str) -> list[list[str]]:
    """The printed table's rows, split into columns, without the wall seconds (which differ between any runs)."""
    rows = stdout.split("model chosen on validation")[1].split("device\n")[1].splitlines()
    return [r.split()[:-2] + r.split()[-1:] for r in rows if r.strip()]


@pytest.fixture(scope="module")
def grid_runs(tmp_path_factory):
    """The same small grid trained one after another and on a local Ray of two workers, one of them killed once."""
    tmp = tmp_path_factory.mktemp("ray")
    seq = subprocess.Popen([sys.executable, "-m", "ssvae_core", "reproduce", *GRID, "--out", str(tmp / "seq")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=ONE_THREAD)
    ray = subprocess.run([sys.executable, "-c", DYING, str(tmp / "killed"), str(tmp / "epochs.log"), "reproduce",
                          *GRID, "--out", str(tmp / "ray"), "--ray", "--ray-workers", "2"],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    out, err = seq.communicate(timeout=600)
    assert seq.returncode == 0, err
    assert ray.returncode == 0, ray.stdout + ray.stderr
    return tmp, out, ray.stdout, ray.stderr


@needs_ray
def test_reproduce_on_ray_prints_the_sequential_table(grid_runs):
    tmp, seq, ray, _ = grid_runs
    assert ray.count("(Ray task)") == 2 and ray.count(" done at ") == 2
    assert table_without_times(ray) == table_without_times(seq) and len(table_without_times(seq)) == 1
    for name in ("m2-n50-s0", "m2-n50-s1"):  # the same run folders, the same histories
        a, b = (json.loads((tmp / d / name / "run.json").read_text()) for d in ("seq", "ray"))
        assert same_history(a["history"], b["history"]) and a["best"] == b["best"] and b["state"] == "done"


@needs_ray
def test_a_killed_worker_goes_on_from_its_last_epoch(grid_runs):
    tmp, seq, ray, log = grid_runs
    assert (tmp / "killed").exists(), ray + log
    saved = [line.split() for line in (tmp / "epochs.log").read_text().splitlines()]
    s0 = [(pid, int(epoch)) for name, pid, epoch in saved if name == "m2-n50-s0"]
    first, retry = s0[0][0], s0[2][0]
    assert s0 == [(first, 1), (first, 2), (retry, 3), (retry, 4)] and retry != first  # epochs 3, 4 only
    assert "resuming" in ray + log  # the worker's line, passed on by Ray
    a, b = (json.loads((tmp / d / "m2-n50-s0" / "run.json").read_text()) for d in ("seq", "ray"))
    assert same_history(a["history"], b["history"]) and b["state"] == "done"
    assert not (tmp / "ray" / "m2-n50-s0" / "resume.pt").exists()


SWEEP = ["sweep", "--model", "m2", "--dataset", "digits", "--labels", "50", "--hidden", "32", "--z-dim", "4",
         "--device", "cpu", "--trials", "4", "--space", "lr=1e-2,1e-5", "--space", "epochs=4",
         "--space", "batch_size=50,100", "--space", "kl_warmup=0"]


def trials(stdout: str) -> list[list[str]]:
    """The sweep's printed trials (lr, epochs, batch size, KL warm-up, epochs run, val, test [, stopped early])."""
    lines = stdout.split("test error %\n")[1].split("best, chosen")[0].splitlines()
    return [line.split() for line in lines]


def test_sweep_here_runs_every_trial_to_its_end_and_chooses_on_validation(capsys):
    from ssvae_core.cli import main

    assert main(SWEEP) == 0
    out = capsys.readouterr().out
    rows = trials(out)
    assert len(rows) == 4 and all(int(r[4]) == 4 and r[-1] != "early" for r in rows)
    best = min(rows, key=lambda r: float(r[5]))
    assert rows[0] == best and f"validation error {best[5]}%  test error {best[6]}%" in out.split("best, chosen")[1]


@needs_ray
def test_sweep_on_ray_chooses_on_validation_and_stops_hopeless_trials(tmp_path, capsys):
    from ssvae_core.cli import main

    run = subprocess.run([sys.executable, "-m", "ssvae_core", *SWEEP, "--ray", "--ray-workers", "2",
                          "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = trials(run.stdout)
    assert len(rows) == 4
    stopped = [r for r in rows if r[-2:] == ["stopped", "early"]]
    # ASHA stops trials early; which ones depends on when each reports (asynchronous), so only that it did
    assert stopped and all(int(r[4]) < 4 for r in stopped)
    best = min(rows, key=lambda r: float(r[5]))
    assert rows[0] == best and best[0] == "0.01"
    assert f"validation error {best[5]}%  test error {best[6]}%" in run.stdout.split("best, chosen")[1]
    assert main(SWEEP) == 0  # the same trials here: those that ran to their end on Ray have the same numbers
    here = {tuple(r[:4]): r[5:7] for r in trials(capsys.readouterr().out)}
    assert all(here[tuple(r[:4])] == r[5:7] for r in rows if r not in stopped)


def test_ray_flags_without_ray_say_how_to_install_it(monkeypatch, capsys):
    from ssvae_core.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as when it is not installed
    for args in (["reproduce", *GRID, "--ray"], [*SWEEP, "--ray"]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "Ray is not installed" in err and "pip install -r requirements-ray.txt" in err


def test_a_retry_on_another_node_goes_on_from_the_last_epoch(tmp_path, digits, monkeypatch):
    """A run.json written since the task was submitted is an earlier attempt's: resumed even when it names a live
    process on another host (Ray retries a task only after its worker died)."""
    from ssvae_core import cluster, runner
    from tests.test_resume import small_cfg

    real = runner.save_progress

    def save_then_crash(trainer, out, extra=None):
        real(trainer, out, extra)
        if len(trainer.history) == 2:
            raise SystemExit("worker lost")  # run.json stays 'training', as when a worker is killed

    monkeypatch.setattr(runner, "save_progress", save_then_crash)
    cfg = small_cfg("m2", 4)
    with pytest.raises(SystemExit):
        cluster.train_task(cfg, digits, tmp_path, None, False, owner_at_submit=None)
    meta = json.loads((tmp_path / "run.json").read_text())
    meta.update(host="another-node", pid=1)
    (tmp_path / "run.json").write_text(json.dumps(meta))
    monkeypatch.setattr(runner, "save_progress", real)
    epochs = []
    monkeypatch.setattr(runner, "save_progress", lambda t, o, e=None: (epochs.append(t.history[-1]["epoch"]),
                                                                       real(t, o, e)))
    done = cluster.train_task(cfg, digits, tmp_path, None, False, owner_at_submit=None)
    assert epochs == [3, 4] and done["state"] == "done" and len(done["history"]) == 4
    again = cluster.train_task(cfg, digits, tmp_path, None, False, owner_at_submit=None)  # Ray reran a finished task
    assert epochs == [3, 4] and again == done  # kept, not trained again
