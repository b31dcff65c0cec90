"""`reproduce --ray`: each run a Ray task (one CPU core, or one GPU), on a local Ray or an existing cluster.

Tasks write the same run folders as the sequential path, so --out must be on storage every worker sees. A worker
that dies mid-run is retried by Ray and goes on from the run's last finished epoch; M1+M2 runs wait for the
shared M1's task. Ray is optional: pip install -r requirements-ray.txt.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

from ssvae_core.checkpoints import DONE, read_meta, run_state
from ssvae_core.data import Dataset
from ssvae_core.errors import CheckpointError
from ssvae_core.runner import train_or_resume
from ssvae_core.train import TrainConfig, flush_denormals

INSTALL = ("Ray is not installed, and --ray needs it. Install it with\n"
           "    pip install -r requirements-ray.txt      (or: pip install 'ssvae[ray]')\n"
           "or leave out --ray to train on this machine, one run after another.")
RETRIES = 3  # times Ray reruns a task whose worker died (each goes on from the run's last finished epoch)


class Job(NamedTuple):
    """One run to train: its folder, config, name in the log and (M1+M2) the M1 run it starts from."""

    run_dir: Path
    cfg: TrainConfig
    what: str
    m1_run: str | None = None


def import_ray():
    """The ray module, or None after saying how to install it."""
    try:
        import ray  # optional dependency: only --ray needs it, so it is imported here and not at the top
    except ImportError:
        print(INSTALL, file=sys.stderr)
        return None
    return ray


def _meta(run_dir: Path) -> dict | None:
    """run.json of `run_dir`, or None when there is none (or it is unreadable)."""
    try:
        return read_meta(run_dir)
    except CheckpointError:
        return None


def owner(run_dir: Path) -> tuple | None:
    """(host, pid) of the process that last wrote `run_dir`'s run.json while training, or None."""
    meta = _meta(run_dir)
    return (meta.get("host"), meta.get("pid")) if meta is not None and "pid" in meta else None


def train_task(cfg: TrainConfig, data: Dataset, run_dir: Path, m1_run: str | None, half: bool,
               owner_at_submit: tuple | None, after=None) -> dict:
    """A Ray task: train or resume one run (`after`: the shared M1's result, only waited for); its run.json.
    A run.json written by another process since the task was submitted was written by an earlier attempt of this
    task, whose worker died (Ray retries only then): the run goes on from there, on whichever node."""
    flush_denormals()  # per thread, as the command line does, so the numbers match a run on one machine
    meta = _meta(run_dir)
    if meta is not None and run_state(meta) == DONE:  # Ray reran a finished task (its result was lost): keep it
        return meta
    retried = owner(run_dir) not in (None, owner_at_submit)
    return train_or_resume(cfg, data, run_dir, m1_run=m1_run, half=half, quiet=True, owner_gone=retried)


def _resources(ray, cfg: TrainConfig) -> dict:
    """A task's share: one GPU when its device asks for CUDA (auto: when the cluster has GPUs), else one CPU core."""
    gpu = cfg.device == "cuda" or (cfg.device == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
    return {"num_cpus": 1, "num_gpus": 1 if gpu else 0}


def train_on_ray(address: str | None, workers: int | None, data: Dataset, m1_job: Job | None, jobs: list[Job],
                 half: bool) -> dict[Path, dict] | None:
    """Train the shared M1 (if any) and every job as Ray tasks, M1+M2 runs after the M1; their run.json by folder
    (None: a run failed or was stopped)."""
    ray = import_ray()
    if address:
        ray.init(address=address)
    else:
        ray.init(num_cpus=workers or os.cpu_count(), include_dashboard=False)
    try:
        task = ray.remote(max_retries=RETRIES)(sys.modules[__name__].train_task)  # looked up now: tests wrap it
        data_ref = ray.put(data)  # one copy in the object store, not one per task
        m1_ref, pending = None, {}
        if m1_job is not None:
            print(f"== M1 (shared by every M1+M2 run) -> {m1_job.run_dir}")
            m1_ref = task.options(**_resources(ray, m1_job.cfg)).remote(
                m1_job.cfg, data_ref, m1_job.run_dir, None, False, owner(m1_job.run_dir))
            pending[m1_ref] = m1_job
        t0 = time.time()
        for job in jobs:
            print(f"== {job.what} -> {job.run_dir} (Ray task)")
            after = m1_ref if job.cfg.model.kind == "m1m2" else None
            ref = task.options(**_resources(ray, job.cfg)).remote(
                job.cfg, data_ref, job.run_dir, job.m1_run, half, owner(job.run_dir), after)
            pending[ref] = job
        metas, failed = {}, False
        while pending:
            try:
                [ref], _ = ray.wait(list(pending), num_returns=1)
            except KeyboardInterrupt:  # Ctrl-C: the workers end with Ray; each run goes on from its last epoch
                return None
            job = pending.pop(ref)
            try:
                meta = ray.get(ref)
            except ray.exceptions.RayError as exc:
                print(f"   {job.what} failed: {str(exc).strip().splitlines()[-1]}")
                failed = True
                continue
            if meta.get("stopped"):
                print(f"   {job.what} was stopped")
                failed = True
                continue
            metas[job.run_dir] = meta
            print(f"   {job.what} done at {time.time() - t0:.0f}s: test error {meta['best']['test_error']:.2f}%")
        return None if failed else metas
    finally:
        ray.shutdown()
