"""Background training runs for the app: one Trainer per daemon thread, with a limit; no Streamlit.

A run belongs to the app's process, not to a browser tab: every tab sees every job (by id) and can stop it.
A job loads its data in its thread, trains, and writes its run folder after every epoch (best weights, history,
resume state) and when it finishes or is stopped. Progress is read through `Job.snapshot()`, which copies under a lock.
After a restart, `interrupted_runs` lists the run folders whose process is gone, and `start_job(resume=True)` goes on
with one from its last finished epoch.
"""

from __future__ import annotations

import copy
import os
import re
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ssvae_core import generate
from ssvae_core.checkpoints import (
    INTERRUPTED,
    kept_on_resume,
    list_runs,
    load_resume,
    read_meta,
    save_progress,
    save_trainer,
    start_m1,
)
from ssvae_core.checkpoints import STOPPED as STOPPED_RUN
from ssvae_core.data import MNIST_FILES, Dataset, load_dataset
from ssvae_core.errors import CheckpointError, DataError, TrainingError
from ssvae_core.train import TrainConfig, Trainer, flush_denormals

RUNNING, STOPPING, STOPPED, DONE, FAILED = "running", "stopping", "stopped", "done", "failed"
ACTIVE = (RUNNING, STOPPING)


class JobLimitError(RuntimeError):
    """No new training run can start now (the machine's limit is reached, or the run is already going)."""


def max_jobs() -> int:
    """Concurrent training runs allowed in this process: $SSVAE_MAX_JOBS, default 1."""
    try:
        return max(1, int(os.environ.get("SSVAE_MAX_JOBS", "1")))
    except ValueError:
        return 1


@dataclass
class Job:
    """One background training run and its thread-safe progress."""

    cfg: TrainConfig
    data_root: str | None
    run_dir: Path
    m1_run: str | None = None  # M1+M2: start from the M1 of this run folder
    resume: bool = False  # go on with run_dir from its last finished epoch
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    status: str = RUNNING
    phase: str = "loading data"
    stage: str = ""
    epoch: int = 0
    epochs_total: int = 0
    step: int = 0
    steps: int = 0
    history: list[dict] = field(default_factory=list)
    error: str = ""
    message: str = ""
    saved: bool = False
    sample: np.ndarray | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None
    trainer: Trainer | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _ends: list[tuple[str, float]] = field(default_factory=list, repr=False)  # (stage, wall time) per epoch here
    _training_since: float | None = field(default=None, repr=False)

    def stop(self) -> None:
        """Ask the run to end after the current batch; the best checkpoint so far is saved."""
        with self._lock:
            self._stop.set()
            if self.status == RUNNING:
                self.status = STOPPING
            trainer = self.trainer
        if trainer is not None:
            trainer.stop()

    @property
    def active(self) -> bool:
        """Whether the run is still going (running or stopping)."""
        with self._lock:
            return self.status in ACTIVE

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end."""
        if self._thread is not None:
            self._thread.join(timeout)

    def progress(self) -> float:
        """Fraction of all planned batches done, in [0, 1]."""
        with self._lock:
            return self._progress()

    def _progress(self) -> float:
        """progress() without taking the lock (the caller holds it)."""
        if self.status in (DONE,):
            return 1.0
        if not self.epochs_total or not self.steps:
            return 0.0
        done = len(self.history) + self.step / self.steps
        return float(min(1.0, done / self.epochs_total))

    def snapshot(self) -> dict:
        """A consistent copy of the progress: status, phase, epoch, step/steps, history, error, sample…"""
        with self._lock:
            return {
                "id": self.id, "status": self.status, "phase": self.phase, "stage": self.stage,
                "epoch": self.epoch, "epochs_total": self.epochs_total, "step": self.step, "steps": self.steps,
                "progress": self._progress(), "history": copy.deepcopy(self.history), "error": self.error,
                "message": self.message, "saved": self.saved, "run_dir": str(self.run_dir),
                "sample": None if self.sample is None else self.sample.copy(), "resumed": self.resume,
                "elapsed": (self.finished or time.time()) - self.started, "cfg": self.cfg.to_dict(),
                "stage_epochs": self._stage_epochs(), "seconds_left": self._seconds_left(),
            }

    def _stage_epochs(self) -> int:
        """Epochs of the stage now training (M1+M2's M1 stage: m1_epochs; otherwise the run's epochs)."""
        return self.cfg.m1_epochs if self.stage == "m1" and self.cfg.model.kind == "m1m2" else self.cfg.epochs

    def _seconds_left(self) -> float | None:
        """Wall seconds until the current stage ends: its last (up to) three epochs' mean time × the epochs left."""
        if self.status not in ACTIVE or not self._ends or self._training_since is None:
            return None
        times = [self._training_since] + [t for _, t in self._ends]
        mine = [times[i + 1] - times[i] for i, (s, _) in enumerate(self._ends) if s == self.stage][-3:]
        if not mine:
            return None
        into = self.step / self.steps if self.steps else 0.0
        return max(0.0, sum(mine) / len(mine) * (self._stage_epochs() - self.epoch - into))

    # ---- the thread -------------------------------------------------------------------------
    def _set(self, **kw) -> None:
        """Set fields under the lock."""
        with self._lock:
            for k, v in kw.items():
                setattr(self, k, v)

    def _on_batch(self, step: int, steps: int) -> None:
        """Trainer callback: record batch `step` of `steps`."""
        with self._lock:
            self.step, self.steps = step, steps

    def _run(self, data: Dataset | None) -> None:
        """Thread body: load data, train epoch by epoch saving the run folder after each, record the outcome."""
        trainer, extra = None, {}
        flush_denormals()
        try:
            if data is None:
                data = load_dataset(self.cfg.dataset, self.data_root, download=False)
            if self._stop.is_set():
                self._finish(None, STOPPED, "", "Stopped before training began; nothing was saved.")
                return
            self._set(phase="preparing")
            m1_state, resume = None, None
            if self.resume:
                extra, resume = kept_on_resume(read_meta(self.run_dir)), load_resume(self.run_dir)
            else:
                m1_state, extra = start_m1(self.cfg, self.m1_run)
            trainer = Trainer(self.cfg, data, m1_state=m1_state, resume=resume)
            with self._lock:
                self.history = [dict(h) for h in trainer.history]
            trains_m1 = self.cfg.model.kind == "m1m2" and m1_state is None and not _skips_m1(trainer)
            total = self.cfg.epochs + (self.cfg.m1_epochs if trains_m1 else 0)
            self._set(trainer=trainer, epochs_total=total, phase="training", _training_since=time.time())
            if self._stop.is_set():
                trainer.stop()
            for rec in trainer.epochs(on_batch=self._on_batch):
                if rec["complete"]:
                    save_progress(trainer, self.run_dir, extra)
                sample = _sample_grid(trainer, data)
                with self._lock:
                    self.history.append(dict(rec))
                    self._ends.append((rec["stage"], time.time()))
                    self.epoch, self.stage, self.step = rec["epoch"], rec["stage"], 0
                    if sample is not None:
                        self.sample = sample
            stopped = self._stop.is_set() or trainer.stopped
            self._finish(trainer, STOPPED if stopped else DONE, "", extra=extra)
        except (DataError, TrainingError, CheckpointError) as exc:
            self._finish(trainer, FAILED, str(exc), extra=extra)
        except Exception as exc:  # keep the thread from dying silently
            traceback.print_exc()
            self._finish(trainer, FAILED, f"Unexpected error: {type(exc).__name__}: {exc}", extra=extra)

    def _finish(self, trainer: Trainer | None, status: str, error: str, message: str = "",
                extra: dict | None = None) -> None:
        """Save the run folder if there is a model to save, then publish the final status and what was saved."""
        saved = False
        if trainer is not None and trainer.best_state is not None:
            try:
                extra = {**(extra or {}), **({"error": error} if error else {})}
                save_trainer(trainer, self.run_dir, extra=extra, state=status if status == FAILED else None)
                saved = True
                b = trainer.best
                message = f"Saved the best epoch ({b['epoch']}: validation error {b['val_error']:.2f}%, " \
                          f"test error {b['test_error']:.2f}%) to {self.run_dir}."
                if trainer.partial is not None:
                    p = trainer.partial
                    message = (f"Stopped in epoch {p['epoch']} after {p['batches']} of {p['steps']} batches. "
                               + (f"No epoch had finished, so the saved model is that partial epoch "
                                  f"(validation error {b['val_error']:.2f}%) in {self.run_dir}."
                                  if trainer.kept_partial else
                                  message + " The partial epoch is not kept; Resume goes on from the last "
                                            "finished one."))
            except (CheckpointError, OSError) as exc:
                error = (error + " " if error else "") + f"Saving failed: {exc}"
                status = FAILED
        elif status != FAILED and not message:
            message = "Stopped before the first epoch finished; nothing was saved."
            if trainer is not None and trainer.resume_state is not None:  # e.g. inside M1+M2's M1 stage
                try:
                    save_progress(trainer, self.run_dir, extra)
                    message = ("Stopped before the model's own first epoch finished; the finished M1 epochs are "
                               f"saved in {self.run_dir}, and Resume goes on from there.")
                except OSError:
                    pass
        with self._lock:
            self.status, self.saved, self.finished = status, saved, time.time()
            self.phase = status
            self.error = error
            self.message = message or self.message
            self.trainer = None  # free the data and optimiser state


def _skips_m1(trainer: Trainer) -> bool:
    """Whether a resumed M1+M2 trainer goes on in its own stage (its M1 stage is over)."""
    r = trainer.resume_state
    return r is not None and r.get("stage") == "m1m2"


@torch.no_grad()
def _sample_grid(trainer: Trainer, data: Dataset, rows: int = 4) -> np.ndarray | None:
    """A grid of samples from the current model (rows styles × K classes; M1: a plain grid), or None."""
    model = trainer.model
    if model is None or not hasattr(model, "decode_x"):
        return None
    shape = tuple(data.image_shape)
    g = torch.Generator().manual_seed(0)
    was_training = model.training
    try:
        model.eval()
        dev = next(model.parameters()).device
        if hasattr(model, "num_classes"):
            zs = torch.randn(rows, generate.z_dim(model), generator=g)
            return generate.class_grid(model, zs.numpy(), shape)
        z = torch.randn(rows * 10, model.z_dim, generator=g).to(dev)
        return generate.tile(generate.to_images(model.decode_x(z), shape), rows, 10)
    finally:
        model.train(was_training)


# ---- the process-wide registry ----------------------------------------------------------------
_LOCK = threading.Lock()
_JOBS: dict[str, Job] = {}  # id -> job, every run this process started


def start_job(cfg: TrainConfig, data_root: str | Path | None, run_dir: str | Path, data: Dataset | None = None,
              m1_run: str | None = None, resume: bool = False) -> Job:
    """Train `cfg` into `run_dir` in a daemon thread (resume=True: go on with the run saved there); JobLimitError
    if the machine runs its maximum already or that run folder is being trained."""
    run_dir = Path(run_dir)
    with _LOCK:
        running = [j for j in _JOBS.values() if j.active]
        if any(j.run_dir.resolve() == run_dir.resolve() for j in running):
            raise JobLimitError(f"{run_dir} is already being trained.")
        limit = max_jobs()
        if len(running) >= limit:
            raise JobLimitError(f"The machine is already running {len(running)} training "
                                f"run{'s' if len(running) != 1 else ''} (the maximum is {limit}). "
                                f"Wait for it to finish or stop it, or raise SSVAE_MAX_JOBS.")
        job = Job(cfg=copy.deepcopy(cfg), data_root=None if data_root is None else str(data_root),
                  run_dir=run_dir, m1_run=m1_run, resume=resume)
        job._thread = threading.Thread(target=job._run, args=(data,), name=f"ssvae-train-{job.id}", daemon=True)
        _JOBS[job.id] = job
    job._thread.start()
    return job


def resume_job(run_dir: str | Path, data_root: str | Path | None, data: Dataset | None = None) -> Job:
    """Go on with an interrupted or stopped run folder from its last finished epoch, in the background."""
    meta = read_meta(run_dir)
    load_resume(run_dir)  # says why not, if there is nothing to go on from
    return start_job(TrainConfig.from_dict(meta["config"]), data_root, run_dir, data=data, resume=True)


def get_job(job_id: str) -> Job | None:
    """The job with this id (running or finished), if this process started it."""
    with _LOCK:
        return _JOBS.get(job_id)


def all_jobs() -> list[Job]:
    """Every job this process started, newest first."""
    with _LOCK:
        return sorted(_JOBS.values(), key=lambda j: -j.started)


def active_jobs() -> list[Job]:
    """Every job still running, newest first."""
    return [j for j in all_jobs() if j.active]


def forget_job(job_id: str) -> None:
    """Drop a finished job from the registry (a running one is kept)."""
    with _LOCK:
        job = _JOBS.get(job_id)
        if job is not None and not job.active:
            del _JOBS[job_id]


def interrupted_runs(root: str | Path) -> list[dict]:
    """list_runs rows under `root` that can go on from a finished epoch: interrupted (their process is gone) or
    stopped, and not being trained by this process now."""
    busy = {j.run_dir.resolve() for j in active_jobs()}
    return [r for r in list_runs(root) if r.get("ok") and r.get("resumable")
            and r.get("state") in (INTERRUPTED, STOPPED_RUN) and Path(r["path"]).resolve() not in busy]


def new_run_dir(root: str | Path, cfg: TrainConfig) -> Path:
    """A fresh run folder name under `root`: MODEL-DATASET-nN-sSEED-YYYYmmdd-HHMMSS (suffixed if taken)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{cfg.model.kind}-{cfg.dataset}-n{cfg.labels}-s{cfg.seed}-{stamp}")
    path, i = Path(root) / base, 1
    while path.exists():
        i += 1
        path = Path(root) / f"{base}-{i}"
    return path


def dataset_problem(name: str, root: str | Path) -> str | None:
    """None when `name`'s files look present under `root` (or it needs none); else a message saying where they go."""
    root = Path(root)
    if name == "digits":
        return None
    if name == "mnist":
        folder = root / "MNIST" / "raw"
        missing = [f for f in MNIST_FILES if not (folder / f).is_file() and not (folder / f"{f}.gz").is_file()]
        if missing:
            return (f"MNIST is not on this machine: put the four IDX files ({', '.join(MNIST_FILES)}; .gz also "
                    f"works) in {folder.resolve()}/ (or set SSVAE_DATA_DIR to a folder holding MNIST/raw/).")
        return None
    if name == "svhn":
        folder = root / "SVHN"
        missing = [f for f in ("train_32x32.mat", "test_32x32.mat") if not (folder / f).is_file()]
        if missing:
            return (f"SVHN is not on this machine: download {' and '.join(missing)} from "
                    f"http://ufldl.stanford.edu/housenumbers/ into {folder.resolve()}/.")
        return None
    if name == "norb":
        from ssvae_core.formats import NORB_PREFIXES, _find_file  # torchvision, scipy: slow to load

        folder = root / "NORB"
        names = [f"{NORB_PREFIXES[s]}-{k}.mat" for s in ("train", "test") for k in ("dat", "cat")]
        missing = [n for n in names if _find_file(folder, n) is None]
        if missing:
            return (f"small NORB is not on this machine: download {', '.join(missing)} (.gz is fine) from "
                    f"https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/ into {folder.resolve()}/.")
        return None
    return f"Unknown dataset {name!r}."
