"""Per-epoch checkpoints and exact resume: a run killed after epoch k and resumed ends as if never interrupted."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ssvae_core.checkpoints import INTERRUPTED, load_run, read_meta, run_state
from ssvae_core.models import ModelConfig
from ssvae_core.train import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"seconds", "images_per_s", "eval_seconds"}  # wall-clock fields differ between any two runs


def same_history(a: list[dict], b: list[dict]) -> bool:
    """Equal histories, ignoring how long each epoch took."""
    strip = lambda h: [{k: v for k, v in r.items() if k not in TIMING} for r in h]  # noqa: E731
    return strip(a) == strip(b)


def small_cfg(kind: str, epochs: int, **kw) -> TrainConfig:
    model = ModelConfig(kind=kind, hidden=[32], z_dim=4, m1_hidden=[32], m1_z_dim=6)
    return TrainConfig(model=model, dataset="digits", labels=50, epochs=epochs, m1_epochs=3, batch_size=200,
                       labelled_batch=50, lr=3e-3, lr_final=1e-4, device="cpu", **kw)


def through_disk(state: dict) -> dict:
    """The state as resume.pt gives it back: saved, then loaded with weights_only=True."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("kind, cut, kw", [
    ("m2", 2, {"ema": 0.99}),  # inside the only stage, with a moving average
    ("m1m2", 2, {}),  # inside M1+M2's M1 stage
    ("m1m2", 4, {"kl_warmup": 2.0}),  # inside its own stage, after the M1 stage
    ("m1", 1, {}),
])
def test_resume_after_any_epoch_gives_the_uninterrupted_run(digits, kind, cut, kw):
    torch.set_num_threads(1)
    full = Trainer(small_cfg(kind, 4, **kw), digits)
    full_history = list(full.epochs())
    first = Trainer(small_cfg(kind, 4, **kw), digits)
    it = first.epochs()
    for _ in range(cut):
        next(it)
    state = through_disk(first.resume_state)  # what a process killed now would leave
    resumed = Trainer(small_cfg(kind, 4, **kw), digits, resume=state)
    list(resumed.epochs())
    assert same_history(resumed.history, full_history)
    assert resumed.best == full.best
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


SCRIPT = """
import pathlib, sys, time
from ssvae_core import runner
real = runner.save_progress
def held(trainer, out, extra=None):
    real(trainer, out, extra)
    if sum(h["complete"] for h in trainer.history) == 2:  # epoch 2 is on disk: wait here to be killed
        pathlib.Path(sys.argv[1]).write_text("saved")
        time.sleep(600)
runner.save_progress = held
from ssvae_core.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_train_killed_after_epoch_2_resumes_to_the_same_history_and_weights(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    flags = ["--model", "m2", "--dataset", "digits", "--labels", "50", "--epochs", "5", "--hidden", "32",
             "--z-dim", "4", "--batch-size", "200", "--lr", "3e-3", "--lr-final", "1e-4", "--device", "cpu"]
    marker, run = tmp_path / "marker", tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(marker), "train", *flags, "--out", str(run)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "epoch 2 was never saved"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    meta = read_meta(run)
    assert run_state(meta) == INTERRUPTED and sum(h["complete"] for h in meta["history"]) == 2
    listed = subprocess.run([sys.executable, "-m", "ssvae_core", "list", "--root", str(tmp_path)], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    assert "[interrupted, resumable]" in listed.stdout

    def cli(*args: str) -> subprocess.CompletedProcess:
        r = subprocess.run([sys.executable, "-m", "ssvae_core", *args], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        return r

    resumed = cli("train", "--resume", str(run))
    assert "after 2 finished epochs" in resumed.stdout
    assert [line.split()[2] for line in resumed.stdout.splitlines() if line.startswith("[m2] epoch")] == ["3", "4",
                                                                                                        "5"]
    cli("train", *flags, "--out", str(tmp_path / "whole"))
    a, b = read_meta(run), read_meta(tmp_path / "whole")
    assert same_history(a["history"], b["history"]) and a["best"] == b["best"] and a["state"] == "done"
    wa, wb = load_run(run).model.state_dict(), load_run(tmp_path / "whole").model.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wb)
    assert not (run / "resume.pt").exists()  # a finished run keeps only its weights and run.json
    again = subprocess.run([sys.executable, "-m", "ssvae_core", "train", "--resume", str(run)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "finished earlier; there is nothing to resume" in again.stdout


def test_run_json_is_written_after_every_epoch(tmp_path, digits):
    from ssvae_core.runner import run_training

    seen = []
    from ssvae_core import runner

    real = runner.save_progress

    def spy(trainer, out, extra=None):
        real(trainer, out, extra)
        seen.append(json.loads((Path(out) / "run.json").read_text())["epochs"])

    runner.save_progress = spy
    try:
        run_training(small_cfg("m2", 3), digits, tmp_path / "run", quiet=True)
    finally:
        runner.save_progress = real
    assert seen == [1, 2, 3] and read_meta(tmp_path / "run")["state"] == "done"
