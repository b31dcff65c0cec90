"""Table 1 of the paper: train a chosen subset (model × N × seeds), resume finished runs, print ours beside theirs.

python -m ssvae_core reproduce --models m2,m1m2 --labels 100 --seeds 0,1,2 --out runs/table1
M1+M2 runs share one M1 (unsupervised, label-free): on MNIST the shipped one, else (or with --fresh-m1) one trained
once into OUT/m1. A run that was stopped or interrupted goes on from its last finished epoch.
--restarts K trains K initialisations of each label draw and keeps the one with the lowest validation error.
--batched trains the runs of each model and N (seeds × restarts) together, their weights stacked (batched.py).
Unless given as flags, epochs, learning rates and hidden sizes come from the model's recipe (ssvae_core/recipes.py).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from ssvae_core.batched import group_runs
from ssvae_core.checkpoints import DONE, holds_clusters, load_resume, read_meta, run_state, take_clusters_shape, wall
from ssvae_core.cluster import Job, import_ray, train_on_ray
from ssvae_core.data import Dataset, load_dataset
from ssvae_core.errors import CheckpointError
from ssvae_core.flags import add_train_args, at_least, config_from_args
from ssvae_core.recipes import M1_EPOCHS, MODEL_NAMES, PAPER, SHIPPED_M1, recipe
from ssvae_core.runner import resumable, run_batch_training, train_or_resume

LABEL = MODEL_NAMES


def _done(run_dir: Path) -> dict | None:
    """run.json of a finished (not interrupted) run, else None."""
    try:
        meta = read_meta(run_dir)
    except CheckpointError:
        return None
    return meta if run_state(meta) == DONE else None


IGNORED = {"device", "m1_epochs", "model.z1_active"}  # settings that do not change what a finished run is


def _flat(cfg: dict) -> dict:
    """A run's config with the model's fields as model.NAME."""
    return {**{k: v for k, v in cfg.items() if k != "model"}, **{f"model.{k}": v for k, v in cfg["model"].items()}}


def differences(meta: dict, cfg, ignore: set[str] = frozenset(), m1_dir: Path | None = None) -> list[str]:
    """How a finished run's settings differ from those asked for, e.g. ['epochs 40 (asked 200)']; [] if none."""
    old = _flat(type(cfg).from_dict(meta["config"]).to_dict())  # settings added since then take their defaults
    new = _flat(cfg.to_dict())
    out = [f"{k} {old.get(k)} (asked {v})" for k, v in new.items() if k not in IGNORED | ignore and old.get(k) != v]
    if m1_dir is not None and meta.get("m1_run") and Path(meta["m1_run"]).resolve() != m1_dir.resolve():
        out.append(f"M1 {meta['m1_run']} (asked {m1_dir})")
    return out


def _refuse(run_dir: Path, diffs: list[str]) -> int:
    """A finished run with other settings is never reused silently, nor overwritten."""
    print(f"{run_dir} was trained with other settings: {', '.join(diffs)}.\n"
          "Give the same flags as then, another --out, or delete that folder to train it again.")
    return 1


def epochs_to(history: list[dict], stage: str, target: float | None) -> int | None:
    """The first epoch of `stage` whose test error is at or below `target` (None: never, or no target)."""
    if target is None:
        return None
    return next((h["epoch"] for h in history if h.get("stage") == stage and h.get("test_error", 1e9) <= target), None)


def _to_paper(rs: list[dict]) -> str:
    """Mean epochs to reach the paper's error over the runs that did, and how many did ("-": none did)."""
    hits = [r["to_paper"] for r in rs if r["to_paper"] is not None]
    if not hits:
        return "-"
    return f"{statistics.mean(hits):.0f}" + ("" if len(hits) == len(rs) else f" ({len(hits)}/{len(rs)})")


def table(rows: list[dict]) -> str:
    """The results table: ours (mean ± std over seeds) beside the paper's; seeds 3×2: best of 2 inits per draw."""
    lines = [f"{'model':<11}{'N':>6}{'ours test error %':>22}{'seeds':>7}{'paper':>8}{'epochs':>8}"
             f"{'best ep':>9}{'ep→paper':>10}{'wall s':>9}  device"]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["labels"]), []).append(r)
    for (model, n), rs in sorted(groups.items()):
        errs = [r["test_error"] for r in rs]
        sd = statistics.stdev(errs) if len(errs) > 1 else 0.0
        paper = PAPER.get(model, {}).get(n)
        inits = rs[0].get("inits", 1)  # 3×2: three label draws, the best of two initialisations each
        lines.append(f"{LABEL[model]:<11}{n:>6}{statistics.mean(errs):>14.2f} ± {sd:<5.2f}"
                     f"{str(len(rs)) + (f'×{inits}' if inits > 1 else ''):>7}"
                     f"{paper if paper is not None else '-':>8}{rs[0]['epochs']:>8}"
                     f"{statistics.mean(r['best_epoch'] for r in rs):>9.1f}{_to_paper(rs):>10}"
                     f"{statistics.mean(r['seconds'] for r in rs):>9.0f}{' ' if all(r['wall'] for r in rs) else '*'}"
                     f" {rs[0]['device']}")
    return "\n".join(lines)


def _with_recipe(a: argparse.Namespace, model: str, labels: int | None = None,
                 start: str = "m1") -> argparse.Namespace:
    """The flags, with the model's recipe (at `labels`; M1+M2 from its `start`) filling those not given."""
    filled = {k: v for k, v in recipe(model, labels, start, a.dataset).items() if getattr(a, k, None) is None}
    return argparse.Namespace(**{**vars(a), **filled})


def _stopped() -> int:
    """Ctrl-C or `kill` ends the whole grid, not only the run in progress."""
    print("Stopped. Finished runs are kept; the same command goes on, the stopped run from its last finished epoch.")
    return 1


def resumes_at(run_dir: Path) -> tuple | None:
    """(stage, epoch, optimiser steps) a run goes on from, or None when it starts afresh."""
    if not resumable(run_dir):
        return None
    state = load_resume(run_dir)
    return state["stage"], int(state["epoch"]), int(state["updates"])


def batches(jobs: list[Job]) -> list[list[Job]]:
    """The jobs that train together under --batched: same model, sizes, N and schedule (batched.group_runs), the
    same M1, and the same epoch to go on from; M1, supervised and one-of-a-kind runs come alone."""
    groups = group_runs([j.cfg for j in jobs], [j.m1_run is not None for j in jobs],
                        [(j.m1_run, resumes_at(j.run_dir)) for j in jobs])
    return [[jobs[i] for i in g] for g in groups]


def train_batch(data: Dataset, group: list[Job], half: bool) -> dict[Path, dict] | None:
    """Train a group of jobs together with stacked weights; their run.json by folder (None: stopped)."""
    print(f"== {len(group)} runs together (batched): " + "; ".join(j.what for j in group))
    for job in group:
        print(f"   -> {job.run_dir}")
    resume = resumes_at(group[0].run_dir) is not None
    if resume:
        print("   resuming them from their last finished epoch", flush=True)
    t0 = time.time()
    got = run_batch_training([j.cfg for j in group], data, [j.run_dir for j in group], m1_run=group[0].m1_run,
                             half=half, resume=resume)
    if any(meta is None or meta.get("stopped") for meta in got):
        return None
    for job, meta in zip(group, got, strict=True):
        print(f"   {job.what}: test error {meta['best']['test_error']:.2f}%")
    print(f"   done in {time.time() - t0:.0f}s")
    return {job.run_dir: meta for job, meta in zip(group, got, strict=True)}


def train_here(data: Dataset, m1_job: Job | None, jobs: list[Job], half: bool,
               batched: bool = False) -> dict[Path, dict] | None:
    """Train the shared M1 (if any), then every job, one after another (`batched`: each batch of jobs together);
    their run.json by folder (None: stopped)."""
    if m1_job is not None:
        print(f"== M1 (shared by every M1+M2 run) -> {m1_job.run_dir}")
        if train_or_resume(m1_job.cfg, data, m1_job.run_dir).get("stopped"):
            return None
    metas = {}
    for group in batches(jobs) if batched else [[job] for job in jobs]:
        if len(group) > 1:
            done = train_batch(data, group, half)
            if done is None:
                return None
            metas.update(done)
            continue
        job = group[0]
        print(f"== {job.what} -> {job.run_dir}")
        t0 = time.time()
        meta = train_or_resume(job.cfg, data, job.run_dir, m1_run=job.m1_run, half=half)
        if meta.get("stopped"):
            return None
        print(f"   done in {time.time() - t0:.0f}s: test error {meta['best']['test_error']:.2f}%")
        metas[job.run_dir] = meta
    return metas


def _row(model: str, n: int, seed: int, runs: list[tuple[Path, dict]], m1: Path | None) -> dict:
    """The table's row of one label draw: its initialisation with the lowest validation error, every init's time."""
    run_dir, meta = min(runs, key=lambda r: r[1]["best"]["val_error"])  # chosen on validation
    if len(runs) > 1:
        print(f"   seed={seed}: validation error of each init "
              + ", ".join(f"{m['best']['val_error']:.2f}" for _, m in runs) + f"; keeping {run_dir}")
    seconds, measured = 0.0, True  # every init's time counts: that is what the row cost
    for _, m in runs:
        s, ok = wall(m)
        seconds, measured = seconds + s, measured and ok
    if m1 is not None:
        m1_meta = _done(Path(meta.get("m1_run", m1)))
        m1_seconds, m1_measured = wall(m1_meta) if m1_meta else (0.0, True)
        m1_seconds = m1_seconds or 0.0  # the shipped M1 records no training time
        seconds, measured = seconds + m1_seconds, measured and m1_measured
    return {"model": model, "labels": n, "seed": seed, "test_error": meta["best"]["test_error"],
            "best_epoch": meta["best"]["epoch"], "epochs": meta["epochs"],
            "to_paper": epochs_to(meta["history"], model, PAPER.get(model, {}).get(n)),
            "seconds": seconds, "wall": measured, "device": meta["device"], "inits": len(runs)}


def cmd_reproduce(a: argparse.Namespace) -> int:
    if a.ray is not None and a.batched:
        print("--batched trains in this process; it does not combine with --ray.")
        return 2
    if a.batched and a.compile:
        print("--compile compiles one run's step; --batched steps many runs at once and is not compiled. Use one.")
        return 2
    if a.ray is not None and import_ray() is None:
        return 2
    out = Path(a.out)
    models = a.models.split(",")
    labels = [int(n) for n in a.labels.split(",")]
    seeds = [int(s) for s in a.seeds.split(",")]
    data = load_dataset(a.dataset, a.data_dir, download=not a.no_download)
    shipped = a.dataset == "mnist" and not a.fresh_m1 and (Path(SHIPPED_M1) / "run.json").is_file()
    m1_dir = Path(a.m1_run) if a.m1_run else Path(SHIPPED_M1) if shipped else out / "m1"
    m1_job = None
    if "m1m2" in models and not a.m1_run and not shipped:
        m1_cfg = config_from_args(_with_recipe(a, "m1"), "m1", labels[0], 0, a.dataset)
        m1_cfg.epochs = a.m1_epochs
        m1_meta = _done(m1_dir)
        if m1_meta is None:
            m1_job = Job(m1_dir, m1_cfg, "M1 (shared by every M1+M2 run)")
        elif diffs := differences(m1_meta, m1_cfg, ignore={"labels"}):  # M1 is label-free
            return _refuse(m1_dir, diffs)
    draws = []  # (model, N, seed, run folders of its initialisations)
    jobs = []  # the runs to train
    for model in models:
        m1 = m1_dir if model == "m1m2" else None
        for n in labels:
            for seed in seeds:
                dirs = []
                for init in range(a.restarts):
                    run_dir = out / (f"{model}-n{n}-s{seed}" + (f"-i{init}" if init else ""))
                    meta = _done(run_dir)
                    start = "clusters" if m1 is not None and holds_clusters(m1) else "m1"  # the M1 is trained
                    cfg = config_from_args(_with_recipe(a, model, n, start), model, n, seed, a.dataset, init)
                    if start == "clusters":  # the stage starts from its clusters: their sizes
                        take_clusters_shape(cfg, m1)
                    if meta is not None and (diffs := differences(meta, cfg, m1_dir=m1)):
                        return _refuse(run_dir, diffs)
                    what = f"{LABEL[model]} N={n} seed={seed}" + (f" init={init}" if init else "")
                    if meta is None:
                        jobs.append(Job(run_dir, cfg, what, str(m1) if m1 else None))
                    else:
                        print(f"== {what}: finished earlier, reusing {run_dir}")
                    dirs.append(run_dir)
                draws.append((model, n, seed, dirs))
    if a.ray is None or not (jobs or m1_job):  # nothing to train: no Ray to start
        metas = train_here(data, m1_job, jobs, a.half, a.batched)
    else:
        metas = train_on_ray(a.ray or None, a.ray_workers, data, m1_job, jobs, a.half)
    if metas is None:
        return _stopped()
    rows = [_row(model, n, seed, [(d, metas.get(d) or _done(d)) for d in dirs], m1_dir if model == "m1m2" else None)
            for model, n, seed, dirs in draws]
    print()
    print(f"{a.dataset} test error (%), model chosen on validation; ep→paper: first epoch at or below the paper's "
          "test error; wall s: training and per-epoch evaluation, including the shared M1 for M1+M2 "
          "(or clusters) "
          "(*: runs saved before evaluation was timed, training steps only)"
          + ("" if a.dataset == "mnist" else "; the paper column is MNIST's"))
    print(table(rows))
    return 0


def add_parser(sub) -> None:
    """Register `reproduce` on the CLI."""
    p = sub.add_parser("reproduce", help="train model × N × seeds on MNIST and print Table 1 (resumes)")
    p.add_argument("--models", default="m2,m1m2", help="comma-separated, e.g. m2,m1m2")
    p.add_argument("--labels", default="100", help="comma-separated label budgets, e.g. 100,600,1000,3000")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (label draws)")
    p.add_argument("--dataset", default="mnist", help="mnist (the paper's Table 1) or another for a quick check")
    p.add_argument("--restarts", type=at_least(1), default=1,
                   help="initialisations per label draw; the one with the lowest validation error is kept")
    p.add_argument("--out", default="runs/table1", help="folder for the runs (finished runs are reused)")
    p.add_argument("--fresh-m1", action="store_true",
                   help=f"M1+M2 on MNIST: train a shared M1 into OUT/m1 as the shipped {SHIPPED_M1} was (the results "
                        "table's recipe, not train's shorter one from scratch) instead of using it")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run each run as a Ray task (one CPU core, or one GPU with --device cuda) on a local Ray, or "
                        "on the cluster at ADDRESS (e.g. auto or ray://HOST:10001); a cluster needs --out and the "
                        "data on a filesystem every node sees, and ssvae installed on every node. Needs pip install "
                        "-r requirements-ray.txt")
    p.add_argument("--batched", action="store_true",
                   help="train the runs of each model and N (every seed and restart) together in this process, "
                        "their weights stacked, so one kernel launch serves them all on a GPU: M2, and M1+M2 on the "
                        "shared M1; M1 and supervised runs go one by one. Each run draws its own random numbers and "
                        "is saved every epoch as usual, and a stopped batch goes on from its last finished epoch "
                        "(a stop inside an epoch drops that epoch for every run, even the first). Not with --ray")
    p.add_argument("--ray-workers", type=at_least(1), default=None,
                   help="--ray without ADDRESS: CPU cores of the local Ray (default: all of this machine's)")
    add_train_args(p)
    # None: the model's RECIPE fills it
    p.set_defaults(func=cmd_reproduce, epochs=None, lr=None, lr_final=None, hidden=None, kl_warmup=None, ema=None,
                   alpha=None, shift=None, m1_epochs=M1_EPOCHS)
