"""Run one training from a config, as `train` and `reproduce` do: a line per epoch, a checkpoint after every epoch,
resume after a crash or a stop."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from ssvae_core.batched import BatchedTrainer
from ssvae_core.checkpoints import (
    DONE,
    FAILED,
    INTERRUPTED,
    RESUME,
    STOPPED,
    TRAINING,
    kept_on_resume,
    load_resume,
    read_meta,
    run_state,
    save_progress,
    save_trainer,
    start_m1,
)
from ssvae_core.data import Dataset
from ssvae_core.errors import CheckpointError, TrainingError
from ssvae_core.train import TrainConfig, Trainer


def resumable_config(run_dir: str | Path, owner_gone: bool = False) -> tuple[TrainConfig, dict]:
    """The config and run.json of a run that can go on (interrupted or stopped; with `owner_gone`, also one still
    marked training by a process known to be dead, e.g. on another machine); CheckpointError says why not."""
    meta = read_meta(run_dir)
    state = run_state(meta)
    if state == DONE:
        raise CheckpointError(f"{run_dir}: this run finished; there is nothing to resume.")
    if state == TRAINING and not owner_gone:
        raise CheckpointError(f"{run_dir}: process {meta.get('pid')} on {meta.get('host')} is still training it.")
    load_resume(run_dir)  # says so if there is no state to go on from
    return TrainConfig.from_dict(meta["config"]), meta


def progress_line(rec: dict) -> str:
    """One epoch's line in a log: stage, epoch, loss, errors, seconds."""
    errs = f" val {rec['val_error']:.2f}% test {rec['test_error']:.2f}%" if "val_error" in rec else ""
    return (f"[{rec['stage']}] epoch {rec['epoch']:3d}  loss {rec['loss']:9.3f}{errs}  "
            f"{rec['seconds']:.1f}s ({rec['images_per_s']:.0f} img/s)")


def _progress_bar(quiet: bool) -> tuple[tqdm, Callable[[int, int], None]]:
    """A batch progress bar (off when quiet or not on a terminal) and the on_batch callback that moves it."""
    bar = tqdm(total=0, unit="batch", leave=False, disable=True if quiet else None, dynamic_ncols=True)

    def on_batch(step: int, steps: int) -> None:
        if bar.total != steps:
            bar.reset(total=steps)
        bar.update(step - bar.n)

    return bar, on_batch


def _stop_on_sigterm(stop: Callable[[], None], message: str) -> None:
    """`kill PID` (SIGTERM) calls `stop` (between batches; the run then saves), from the main thread only."""
    def on_term(signum, frame) -> None:
        print(message, file=sys.stderr)
        stop()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_term)


def _say_partial(p: dict, kept: bool) -> None:
    """Tell on stderr where a stop inside an epoch fell and whether that partial epoch is what is saved."""
    print(f"Stopped in epoch {p['epoch']} after {p['batches']} of {p['steps']} batches"
          + ("; no epoch had finished, so that partial epoch is what is saved." if kept
             else "; that partial epoch is not kept (resume goes on from the last finished epoch)."), file=sys.stderr)


def run_training(cfg: TrainConfig, data: Dataset, out: str | Path, m1_run: str | None = None, half: bool = False,
                 quiet: bool = False, resume: bool = False, owner_gone: bool = False) -> dict:
    """Train one run into `out`, saving it after every epoch (best weights, run.json, resume.pt) and at the end;
    `resume=True` goes on from the last finished epoch saved in `out` (`owner_gone`: see resumable_config). Returns
    the final run.json."""
    out = Path(out)
    if resume:
        cfg, meta = resumable_config(out, owner_gone)
        extra, half = kept_on_resume(meta), bool(meta.get("save_half", half))
        trainer = Trainer(cfg, data, resume=load_resume(out))
    else:
        m1_state, extra = start_m1(cfg, m1_run)
        trainer = Trainer(cfg, data, m1_state=m1_state)
    extra["save_half"] = half
    bar, on_batch = _progress_bar(quiet)
    _stop_on_sigterm(trainer.stop, "Terminated: stopping after this batch and saving the best model so far.")
    try:
        for rec in trainer.epochs(on_batch=on_batch):
            if not quiet:
                tqdm.write(progress_line(rec), file=sys.stdout)
            if rec["complete"]:
                save_progress(trainer, out, extra)
    except KeyboardInterrupt:
        trainer.stopped = True
        print("Interrupted: saving the best model so far.", file=sys.stderr)
    except TrainingError as exc:
        if trainer.best_state is not None:
            save_trainer(trainer, out, half=half, extra={**extra, "error": str(exc)}, state=FAILED)
        raise
    finally:
        bar.close()
    if trainer.partial is not None:
        _say_partial(trainer.partial, trainer.kept_partial)
    save_trainer(trainer, out, half=half, extra=extra)
    return read_meta(out)


def resumable(run_dir: str | Path, owner_gone: bool = False) -> bool:
    """Whether `run_dir` holds a run that stopped or was interrupted after a finished epoch (it goes on from there);
    `owner_gone`: also one still marked training by a process known to be dead."""
    try:
        meta = read_meta(run_dir)
    except CheckpointError:
        return False
    states = (STOPPED, INTERRUPTED, TRAINING) if owner_gone else (STOPPED, INTERRUPTED)
    return run_state(meta) in states and (Path(run_dir) / RESUME).is_file()


def train_or_resume(cfg: TrainConfig, data: Dataset, run_dir: str | Path, m1_run: str | None = None,
                    half: bool = False, quiet: bool = False, owner_gone: bool = False) -> dict:
    """Train a run into `run_dir`, or go on with it from its last finished epoch if it was interrupted."""
    if resumable(run_dir, owner_gone):
        print(f"   resuming {run_dir} from its last finished epoch", flush=True)
        return run_training(cfg, data, run_dir, half=half, quiet=quiet, resume=True, owner_gone=owner_gone)
    return run_training(cfg, data, run_dir, m1_run=m1_run, half=half, quiet=quiet)


def run_batch_training(cfgs: list[TrainConfig], data: Dataset, outs: list[str | Path], m1_run: str | None = None,
                       half: bool = False, quiet: bool = False, resume: bool = False) -> list[dict | None]:
    """Train R runs that differ only in seed / init together with stacked weights (batched.py), each into its own
    folder of `outs`, saved after every epoch and at the end like run_training's; `resume=True`: every run goes on
    from its resume.pt (all at the same epoch). Returns each run's final run.json (None: it finished no epoch)."""
    outs = [Path(o) for o in outs]
    if resume:
        cfgs, metas = zip(*(resumable_config(o) for o in outs), strict=True)
        extras = [kept_on_resume(m) for m in metas]
        half = bool(metas[0].get("save_half", half))
        m1_state, resumes = None, [load_resume(o) for o in outs]
    else:
        started = [start_m1(cfg, m1_run) for cfg in cfgs]  # sets each cfg's M1 shape to the given M1's
        m1_state, extras, resumes = started[0][0], [e for _, e in started], None
    for e in extras:
        e["save_half"] = half
    batch = BatchedTrainer(list(cfgs), data, m1_state=m1_state, resumes=resumes)
    bar, on_batch = _progress_bar(quiet)
    _stop_on_sigterm(batch.stop, "Terminated: stopping after this batch and saving each run's best model so far.")
    try:
        for records in batch.epochs(on_batch=on_batch):
            for run, rec, out, extra in zip(batch.runs, records, outs, extras, strict=True):
                if not quiet:
                    tqdm.write(f"seed {run.cfg.seed} init {run.cfg.init}: " + progress_line(rec), file=sys.stdout)
                save_progress(run, out, extra)
    except KeyboardInterrupt:
        print("Interrupted: saving each run's best model so far.", file=sys.stderr)
        for run in batch.runs:
            run.stopped = True
    except TrainingError:
        for run, out, extra in zip(batch.runs, outs, extras, strict=True):  # each run kept its last finished epoch
            if run.best_state is not None:
                run.stopped = True
                save_trainer(run, out, half=half, extra=extra)  # stopped: it goes on from there
        raise
    finally:
        bar.close()
    if batch.partial is not None:
        _say_partial(batch.partial, kept=False)
    metas = []
    for run, out, extra in zip(batch.runs, outs, extras, strict=True):
        if run.best_state is None:  # stopped before its first epoch ended: nothing to save
            metas.append(None)
            continue
        save_trainer(run, out, half=half, extra=extra)
        metas.append(read_meta(out))
    return metas
