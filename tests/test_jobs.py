"""Tests for ssvae_core.jobs: a tiny digits M2 run in the background, stop, saving, limits, failures."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from ssvae_core import jobs
from ssvae_core.checkpoints import load_run
from ssvae_core.models import ModelConfig
from ssvae_core.train import TrainConfig


def tiny_cfg(epochs: int = 2, labels: int = 50, dataset: str = "digits") -> TrainConfig:
    """A digits M2 small enough for a few seconds per epoch on a shared CPU."""
    return TrainConfig(model=ModelConfig(kind="m2", hidden=[32], z_dim=2), dataset=dataset, labels=labels,
                       epochs=epochs, batch_size=300, labelled_batch=50, lr=1e-3, device="cpu")


def wait(cond, timeout: float = 60.0) -> None:
    """Poll `cond` until true or fail after `timeout` seconds."""
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    """Stop and forget every job a test leaves behind."""
    yield
    for job in jobs.active_jobs():
        job.stop()
        job.join(60)
    with jobs._LOCK:
        jobs._JOBS.clear()


def test_job_trains_saves_and_loads(tmp_path):
    job = jobs.start_job(tiny_cfg(epochs=2), None, tmp_path / "run")
    job.join(120)
    snap = job.snapshot()
    assert snap["status"] == jobs.DONE, snap["error"]
    assert len(snap["history"]) == 2 and snap["progress"] == 1.0 and snap["saved"]
    assert snap["sample"] is not None and snap["sample"].shape == (4 * 9 - 1, 10 * 9 - 1)
    rec = snap["history"][-1]
    assert {"loss", "elbo_labelled", "elbo_unlabelled", "val_error", "test_error"} <= set(rec)
    run = load_run(tmp_path / "run")
    assert run.cfg.model.kind == "m2" and len(run.meta["history"]) == 2
    assert jobs.get_job(job.id) is job and jobs.all_jobs() == [job]  # every tab of the app sees it


def test_history_grows_and_stop_keeps_best_checkpoint(tmp_path):
    job = jobs.start_job(tiny_cfg(epochs=10_000), None, tmp_path / "run")
    wait(lambda: len(job.snapshot()["history"]) >= 1)
    n1 = len(job.snapshot()["history"])
    wait(lambda: len(job.snapshot()["history"]) > n1)  # still growing while it runs
    assert job.active and 0 < job.progress() < 1
    assert job.snapshot()["seconds_left"] > 0  # thousands of epochs to go
    job.stop()
    job.join(60)
    snap = job.snapshot()
    assert snap["status"] == jobs.STOPPED and snap["saved"] and not job.active
    assert snap["seconds_left"] is None
    assert 2 <= len(snap["history"]) < 10_000
    run = load_run(tmp_path / "run")
    assert run.meta["best"]["epoch"] >= 1


def test_seconds_left_is_the_current_stages_recent_epoch_time_times_its_epochs_left(tmp_path):
    cfg = TrainConfig(model=ModelConfig(kind="m1m2"), epochs=10, m1_epochs=4)
    job = jobs.Job(cfg, None, tmp_path / "run")
    assert job.snapshot()["seconds_left"] is None  # no epoch finished yet
    job._training_since, job.steps = 100.0, 10
    job._ends, job.stage, job.epoch = [("m1", 110.0), ("m1", 130.0)], "m1", 2
    snap = job.snapshot()
    assert snap["stage_epochs"] == 4 and snap["seconds_left"] == pytest.approx(15.0 * 2)  # mean of 10 s and 20 s
    job.step = 5  # half of epoch 3 done
    assert job.snapshot()["seconds_left"] == pytest.approx(15.0 * 1.5)
    # the stage's first epoch: only its own epochs count, not the M1 stage's
    job._ends += [("m1", 140.0), ("m1", 150.0), ("m1m2", 190.0)]
    job.stage, job.epoch, job.step = "m1m2", 1, 0
    snap = job.snapshot()
    assert snap["stage_epochs"] == 10 and snap["seconds_left"] == pytest.approx(40.0 * 9)
    job._ends += [("m1m2", 210.0), ("m1m2", 230.0), ("m1m2", 250.0)]  # the last three: 20 s each
    job.epoch = 4
    assert job.snapshot()["seconds_left"] == pytest.approx(20.0 * 6)
    job.status = jobs.DONE
    assert job.snapshot()["seconds_left"] is None


def held_until(reached, release, make):
    """`make`, then the thread sets `reached` and waits for `release`: the test decides where stop() lands."""
    def held(*args, **kwargs):
        out = make(*args, **kwargs)
        reached.set()
        assert release.wait(60), "the test never released the job's thread"
        return out
    return held


@pytest.mark.parametrize("hold, message", [
    ("load_dataset", "Stopped before training began; nothing was saved."),  # stop while the data loads
    ("Trainer", "Stopped before the first epoch finished; nothing was saved."),  # stop once the trainer exists
])
def test_stop_before_first_epoch_saves_nothing(tmp_path, monkeypatch, hold, message):
    # Held deterministically: without it, a loaded machine could run a whole tiny epoch before stop() (a flaky test).
    reached, release = threading.Event(), threading.Event()
    monkeypatch.setattr(jobs, hold, held_until(reached, release, getattr(jobs, hold)))
    job = jobs.start_job(tiny_cfg(epochs=200), None, tmp_path / "run")
    assert reached.wait(60)
    job.stop()
    release.set()
    job.join(60)
    snap = job.snapshot()
    assert snap["status"] == jobs.STOPPED and not snap["saved"] and not snap["history"]
    assert snap["message"] == message
    assert not (tmp_path / "run" / "model.pt").exists()


def test_limits(tmp_path, monkeypatch):
    monkeypatch.delenv("SSVAE_MAX_JOBS", raising=False)
    assert jobs.max_jobs() == 1
    first = jobs.start_job(tiny_cfg(epochs=200), None, tmp_path / "a")
    with pytest.raises(jobs.JobLimitError, match="already running 1 training run"):
        jobs.start_job(tiny_cfg(), None, tmp_path / "b")  # the machine's maximum
    monkeypatch.setenv("SSVAE_MAX_JOBS", "3")
    with pytest.raises(jobs.JobLimitError, match="already being trained"):
        jobs.start_job(tiny_cfg(), None, tmp_path / "a")  # one run folder, one job
    second = jobs.start_job(tiny_cfg(epochs=200), None, tmp_path / "b")
    assert {j.id for j in jobs.active_jobs()} == {first.id, second.id}
    second.stop()
    second.join(60)
    assert first.active  # stopping one run leaves the other alone
    first.stop()
    first.join(60)
    assert not jobs.active_jobs()


def test_a_stopped_job_resumes_from_its_last_finished_epoch_and_is_listed_until_then(tmp_path):
    root = tmp_path / "checkpoints"
    job = jobs.start_job(tiny_cfg(epochs=10_000), None, root / "run")
    wait(lambda: len(job.snapshot()["history"]) >= 2)
    job.stop()
    job.join(60)
    done = len([h for h in job.snapshot()["history"] if h["complete"]])
    assert [r["name"] for r in jobs.interrupted_runs(root)] == ["run"]
    again = jobs.resume_job(root / "run", None)
    assert again.snapshot()["resumed"] and jobs.interrupted_runs(root) == []  # being trained: not offered
    wait(lambda: len(again.snapshot()["history"]) > done)
    again.stop()
    again.join(60)
    hist = again.snapshot()["history"]
    assert [h["epoch"] for h in hist if h["complete"]][:done + 1] == list(range(1, done + 2))


def test_missing_dataset_fails_with_message(tmp_path):
    job = jobs.start_job(tiny_cfg(dataset="mnist"), tmp_path / "nodata", tmp_path / "run")
    job.join(60)
    snap = job.snapshot()
    assert snap["status"] == jobs.FAILED and "MNIST" in snap["error"]
    assert not snap["saved"]


def test_bad_label_budget_fails_with_message(tmp_path):
    job = jobs.start_job(tiny_cfg(labels=55), None, tmp_path / "run")
    job.join(60)
    snap = job.snapshot()
    assert snap["status"] == jobs.FAILED and "multiple of 10" in snap["error"]


def test_dataset_problem_and_run_dir(tmp_path):
    assert jobs.dataset_problem("digits", tmp_path) is None
    assert "MNIST/raw" in jobs.dataset_problem("mnist", tmp_path)
    assert "SVHN" in jobs.dataset_problem("svhn", tmp_path)
    assert "NORB" in jobs.dataset_problem("norb", tmp_path)
    d1 = jobs.new_run_dir(tmp_path, tiny_cfg())
    assert d1.name.startswith("m2-digits-n50-s0-")
    d1.mkdir()
    assert jobs.new_run_dir(tmp_path, tiny_cfg()) != d1


def test_a_stop_inside_the_first_epoch_names_the_partial_epoch(tmp_path, monkeypatch):
    """A stop after 3 batches of epoch 1 saves that partial epoch and says so, instead of 'the best epoch 1'."""
    calls, reached, release = [], threading.Event(), threading.Event()
    real = jobs.Trainer.batch_terms

    def counted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            reached.set()
            assert release.wait(60)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(jobs.Trainer, "batch_terms", counted)
    cfg = tiny_cfg(epochs=5)
    cfg.batch_size = 50  # 1197 - 50 labelled images: 23 batches an epoch
    job = jobs.start_job(cfg, None, tmp_path / "run")
    assert reached.wait(60)
    job.stop()
    release.set()
    job.join(60)
    snap = job.snapshot()
    assert snap["status"] == jobs.STOPPED and snap["saved"]
    assert snap["message"].startswith("Stopped in epoch 1 after 3 of 23 batches. No epoch had finished")
    assert [h["complete"] for h in snap["history"]] == [False]
    assert load_run(tmp_path / "run").meta["partial"] == {"stage": "m2", "epoch": 1, "batches": 3, "steps": 23}
