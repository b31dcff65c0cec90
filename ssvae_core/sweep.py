"""Hyperparameter search chosen on validation error: trials drawn from a small declared space, trained with Ray Tune
(ASHA stops hopeless trials early) or one after another on this machine; the best settings and their errors.

python -m ssvae_core sweep --model m2 --labels 100 --trials 8 --ray
Test error is only reported, never used to choose.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
from dataclasses import replace
from pathlib import Path

from ssvae_core.checkpoints import m1_from_run
from ssvae_core.cluster import import_ray
from ssvae_core.data import DATASETS, Dataset, load_dataset
from ssvae_core.flags import RECIPE_FLAGS, add_train_args, at_least, config_from_args, fill
from ssvae_core.recipes import SHIPPED_M1, recipe_settings
from ssvae_core.train import TrainConfig, Trainer, flush_denormals

SPACE = {  # the declared search space: the values tried for each setting (--space NAME=V1,V2 replaces a line)
    "lr": [1e-3, 3e-3, 1e-2],  # Adam's initial rate (cosine decay to --lr-final)
    "epochs": [15, 30, 45],  # the stage's length, which the cosine decay spans
    "batch_size": [50, 100, 200],  # unlabelled images per step
    "kl_warmup": [0.0, 5.0],  # epochs over which the KL weight rises to 1
}
TYPES = {"lr": float, "epochs": int, "batch_size": int, "kl_warmup": float}


def space_from(overrides: list[str]) -> dict[str, list]:
    """SPACE with some lines replaced, each override 'NAME=V1,V2,...'; ArgumentTypeError names a bad one."""
    space = dict(SPACE)
    for text in overrides:
        name, _, values = text.partition("=")
        if name not in SPACE or not values:
            raise argparse.ArgumentTypeError(f"--space {text!r}: expected NAME=V1,V2, NAME one of {', '.join(SPACE)}")
        try:
            space[name] = [TYPES[name](v) for v in values.split(",")]
        except ValueError:
            kind = TYPES[name].__name__
            raise argparse.ArgumentTypeError(f"--space {text!r}: values of {name} must be {kind}s") from None
    return space


def draw(space: dict[str, list], n: int, seed: int = 0) -> list[dict]:
    """n settings drawn without replacement from the grid of `space` (the whole grid when n reaches its size)."""
    grid = [dict(zip(space, values, strict=True)) for values in itertools.product(*space.values())]
    return grid if n >= len(grid) else random.Random(seed).sample(grid, n)


def fit(cfg: TrainConfig, data: Dataset, m1_state: dict | None, report) -> None:
    """Train one trial, calling report(metrics) after each epoch of the model's own stage: the epoch, the best
    validation error so far and the test error of that epoch."""
    trainer = Trainer(cfg, data, m1_state=m1_state)
    for rec in trainer.epochs():
        if rec["stage"] == cfg.model.kind:
            report({"epoch": rec["epoch"], "val_error": trainer.best["val_error"],
                    "test_error": trainer.best["test_error"]})


def tune_trial(config: dict, base: TrainConfig, data: Dataset, m1_state: dict | None) -> None:
    """A Ray Tune trial: fit() with the trial's settings, reporting to Tune."""
    from ray import tune  # optional dependency: only sweep --ray needs it

    flush_denormals()  # per thread, as the command line does
    fit(replace(base, **config["settings"]), data, m1_state, tune.report)


def search_on_ray(ray, a: argparse.Namespace, base: TrainConfig, data: Dataset, m1_state: dict | None,
                  trials: list[dict]) -> list[dict]:
    """Every trial as a Ray Tune trial (one CPU core, or one GPU), ASHA stopping those whose validation error
    lags at 1, 2, 4, ... epochs; each trial's settings and last report."""
    from ray import tune  # optional dependency: only sweep --ray needs it
    from ray.tune.schedulers import ASHAScheduler

    if a.ray:
        ray.init(address=a.ray)
    else:
        ray.init(num_cpus=a.ray_workers, include_dashboard=False)
    try:
        gpu = base.device == "cuda" or (base.device == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
        trainable = tune.with_resources(tune.with_parameters(tune_trial, base=base, data=data, m1_state=m1_state),
                                        {"cpu": 1, "gpu": 1 if gpu else 0})
        asha = ASHAScheduler(time_attr="epoch", max_t=max(t["epochs"] for t in trials), grace_period=1,
                             reduction_factor=2)
        tuner = tune.Tuner(trainable, param_space={"settings": tune.grid_search(trials)},
                           tune_config=tune.TuneConfig(metric="val_error", mode="min", scheduler=asha,
                                                       reuse_actors=True),  # torch is imported once per worker
                           run_config=tune.RunConfig(name="sweep", storage_path=str(Path(a.out).resolve()),
                                                     verbose=0))
        results = []
        for r in tuner.fit():
            if r.error is not None:
                print(f"trial {r.config['settings']} failed: {r.error}")
                continue
            results.append({"settings": r.config["settings"], **{k: r.metrics[k] for k in ("epoch", "val_error",
                                                                                             "test_error")}})
        return results
    finally:
        ray.shutdown()


def search_here(base: TrainConfig, data: Dataset, m1_state: dict | None, trials: list[dict]) -> list[dict]:
    """Every trial to its last epoch, one after another on this machine; each trial's settings and last report."""
    results = []
    for i, settings in enumerate(trials):
        last: dict = {}
        fit(replace(base, **settings), data, m1_state, last.update)
        print(f"trial {i + 1}/{len(trials)} {settings}: validation error {last['val_error']:.2f}%", flush=True)
        results.append({"settings": settings, **last})
    return results


def summary(results: list[dict]) -> str:
    """The trials, best validation error first, and the best settings with their validation and test errors."""
    names = list(results[0]["settings"])
    lines = ["".join(f"{n:>12}" for n in names) + f"{'epochs run':>12}{'val error %':>13}{'test error %':>14}"]
    ranked = sorted(results, key=lambda r: r["val_error"])
    for r in ranked:
        early = "  stopped early" if r["epoch"] < r["settings"]["epochs"] else ""
        lines.append("".join(f"{r['settings'][n]:>12g}" for n in names)
                     + f"{r['epoch']:>12}{r['val_error']:>13.2f}{r['test_error']:>14.2f}{early}")
    best = ranked[0]
    lines.append("best, chosen on validation error: " + " ".join(f"{n}={best['settings'][n]:g}" for n in names)
                 + f"  validation error {best['val_error']:.2f}%  test error {best['test_error']:.2f}%")
    return "\n".join(lines)


def cmd_sweep(a: argparse.Namespace) -> int:
    ray = None
    if a.ray is not None and (ray := import_ray()) is None:
        return 2
    try:
        space = space_from(a.space)
    except argparse.ArgumentTypeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    fill(a, recipe_settings(a.model, a.labels, dataset=a.dataset))
    base = config_from_args(a, a.model, a.labels, a.seed, a.dataset)
    data = load_dataset(a.dataset, a.data_dir, download=not a.no_download)
    m1_state = None
    shipped = a.dataset == "mnist" and (Path(SHIPPED_M1) / "run.json").is_file()
    m1_run = a.m1_run or (SHIPPED_M1 if shipped else None)
    if a.model == "m1m2" and m1_run:  # else each trial trains its own M1 first
        m1, fields = m1_from_run(m1_run)
        m1_state = m1.state_dict()
        base.model = replace(base.model, **{k: fields[k] for k in ("m1_hidden", "m1_z_dim", "activation")})
    trials = draw(space, a.trials, a.seed)
    where = "on Ray, ASHA stopping trials early" if ray else "one after another on this machine"
    print(f"{len(trials)} trials of {a.model} on {a.dataset} with {a.labels} labels (seed {a.seed}), {where}")
    if ray:
        results = search_on_ray(ray, a, base, data, m1_state, trials)
    else:
        results = search_here(base, data, m1_state, trials)
    if not results:
        print("No trial finished.")
        return 1
    print(summary(results))
    return 0


def add_parser(sub) -> None:
    """Register `sweep` on the CLI."""
    p = sub.add_parser("sweep", help="search learning rate, epochs, batch size and KL warm-up on validation error")
    p.add_argument("--model", default="m2", choices=["m2", "m1m2", "supervised"])
    p.add_argument("--dataset", default="mnist", choices=DATASETS)
    p.add_argument("--labels", type=int, default=100, help="label budget N")
    p.add_argument("--seed", type=int, default=0, help="the label draw (and the draw of trials)")
    p.add_argument("--trials", type=at_least(1), default=8, help="settings drawn from the space's grid")
    p.add_argument("--space", action="append", default=[], metavar="NAME=V1,V2",
                   help="replace one line of the space: " + "; ".join(f"{k}={','.join(f'{v:g}' for v in vs)}"
                                                                      for k, vs in SPACE.items()))
    p.add_argument("--out", default="runs/sweep",
                   help="--ray: folder for Ray Tune's trial logs (on a cluster, one every node sees)")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="trials on a local Ray, or on the cluster at ADDRESS, with ASHA early stopping (needs pip "
                        "install -r requirements-ray.txt); without: every trial runs to its end, one by one")
    p.add_argument("--ray-workers", type=at_least(1), default=None,
                   help="--ray without ADDRESS: CPU cores of the local Ray (default: all of this machine's)")
    add_train_args(p)
    p.set_defaults(func=cmd_sweep, **{k: None for k in RECIPE_FLAGS})  # None: the model's recipe fills it
