"""Command line: python -m ssvae_core {train,eval,export,list,bench,probe,reproduce,sweep} ..."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ssvae_core import bench, probe, reproduce, sweep
from ssvae_core.checkpoints import (
    DONE,
    export_m1,
    export_run,
    list_runs,
    load_run,
    read_meta,
    run_state,
    stage_start,
    wall,
)
from ssvae_core.data import DATASETS, default_data_root, load_dataset
from ssvae_core.errors import CheckpointError, DataError, TrainingError
from ssvae_core.flags import RECIPE_FLAGS, add_data_args, add_train_args, at_least, config_from_args, fill
from ssvae_core.models import MODELS
from ssvae_core.recipes import FROM_SCRATCH, SHIPPED_M1, recipe_settings
from ssvae_core.runner import resumable_config, run_training
from ssvae_core.train import evaluate, flush_denormals, resolve_device


def default_m1(a: argparse.Namespace) -> str | None:
    """M1+M2's M1: --m1-run, else the shipped M1 on MNIST with the default M1 shape (unless --fresh-m1), else None
    (train a new one)."""
    if a.m1_run or a.fresh_m1 or a.model != "m1m2" or a.dataset != "mnist":
        return a.m1_run
    return SHIPPED_M1 if (Path(SHIPPED_M1) / "run.json").is_file() else None


def cmd_train(a: argparse.Namespace) -> int:
    if a.resume:
        if run_state(read_meta(a.resume)) == DONE:
            print(f"{a.resume} finished earlier; there is nothing to resume.")
            return 0
        cfg, meta = resumable_config(a.resume)
        data = load_dataset(cfg.dataset, a.data_dir, download=not a.no_download)
        done = sum(h.get("complete", True) for h in meta.get("history", []))
        print(f"Resuming {a.resume} ({cfg.model.kind} on {cfg.dataset}, {cfg.labels} labels, seed {cfg.seed}) "
              f"after {done} finished epoch{'s' if done != 1 else ''}")
        out, meta = Path(a.resume), run_training(cfg, data, a.resume, resume=True)
    else:
        if a.label_free and a.model != "m1m2":
            print(f"--label-free trains M1+M2's stage without labels; it does not apply to --model {a.model}.")
            return 2
        fill(a, recipe_settings(a.model, a.labels, stage_start(default_m1(a)), a.dataset) if a.recipe else None)
        cfg = config_from_args(a, a.model, a.labels, a.seed, a.dataset, a.init)
        data = load_dataset(a.dataset, a.data_dir, download=not a.no_download)
        out = Path(a.out or f"checkpoints/{a.model}-{a.dataset}-n{a.labels}-s{a.seed}"
                   + (f"-i{a.init}" if a.init else ""))
        labels = (f"without labels (its clusters named by class with {a.labels} labels, seed {a.seed}, to report "
                  "errors)") if cfg.label_free and a.model == "m1m2" else f"with {a.labels} labels (seed {a.seed})"
        print(f"Training {a.model} on {a.dataset} {labels} -> {out}" + (" with the results recipe" if a.recipe else ""))
        m1_run = default_m1(a)
        start = stage_start(m1_run)
        if a.model == "m1m2" and start == "clusters":
            print(f"M1 and clusters: {m1_run} (label-free; its clusters are named by class with these labels)")
        elif a.model == "m1m2":
            print(f"M1: {m1_run}" + (" (shipped, label-free; --fresh-m1 trains a new one)" if m1_run == SHIPPED_M1
                                     else "" if m1_run else f" trained first, {cfg.m1_epochs} epochs"))
        if a.model == "m1m2" and a.recipe and start != "m1":
            print(f"The recipe from {start} averages the weights (--ema "
                  f"{cfg.ema}) and weighs the labels' classification term less (--alpha {cfg.alpha})")
        meta = run_training(cfg, data, out, m1_run=m1_run, half=a.half)
    b, seconds = meta["best"], wall(meta)[0]
    print(f"Saved {out}: best epoch {b['epoch']}  validation error {b['val_error']:.2f}%  "
          f"test error {b['test_error']:.2f}%  ({seconds:.0f}s on {meta['device']})")
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    run = load_run(a.run_dir, device=resolve_device(a.device))
    data = load_dataset(run.cfg.dataset, a.data_dir, download=not a.no_download)
    res = evaluate(run.model, run.cfg, data, generative=True)
    recorded = run.meta.get("best", {}).get("test_error")
    print(f"{a.run_dir}: {run.cfg.model.kind} on {run.cfg.dataset}, {run.cfg.labels} labels, seed {run.cfg.seed}")
    print(f"validation error {res['val_error']:.2f}%   test error {res['test_error']:.2f}%"
          + (f"   (recorded at training: {recorded:.2f}%)" if recorded is not None else ""))
    if "generative_val_error" in res:
        print(f"argmax_y L(x,y), the generative model's own choice of class: validation error "
              f"{res['generative_val_error']:.2f}% (U(x) pulls q(y|x) towards it; near 90% means p(x|y,z) ignores y)")
    print("confusion matrix (rows: true class, columns: predicted):")
    for i, row in enumerate(res["confusion"]):
        print(f"  {i}: " + " ".join(f"{v:5d}" for v in row))
    return 0


def cmd_list(a: argparse.Namespace) -> int:
    rows = list_runs(a.root)
    if not rows:
        print(f"No runs under {a.root}/ yet: train one with `python -m ssvae_core train`.")
    for r in rows:
        if not r["ok"]:
            print(f"{r['path']}: BROKEN ({r['error']})")
            continue
        te = f"{r['test_error']:.2f}%" if isinstance(r["test_error"], int | float) else "-"
        state = "" if r["state"] == "done" else f" [{r['state']}" + (", resumable" if r["resumable"] else "") + "]"
        print(f"{r['path']}: {r['model']} {r['dataset']} N={r['labels']} seed={r['seed']} "
              f"epochs={r['epochs']} test error {te}{state}")
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    data = load_dataset(read_meta(a.run_dir)["config"]["dataset"], a.data_dir, download=not a.no_download)
    meta = (export_m1 if a.m1 else export_run)(a.run_dir, a.dest, data, half=not a.float32)
    print(f"Exported {a.run_dir} -> {a.dest} ({'float32' if a.float32 else 'float16'} weights): "
          f"validation error {meta['best']['val_error']:.2f}%  test error {meta['best']['test_error']:.2f}%")
    return 0


def main(argv: list[str] | None = None) -> int:
    prog = "python -m ssvae_core" if sys.argv[0].endswith("__main__.py") else None  # else `ssvae`
    parser = argparse.ArgumentParser(prog=prog, description="Semi-supervised VAEs (Kingma et al. 2014).")
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("train", help="train one model and save it as a run folder")
    p.add_argument("--model", default="m2", choices=MODELS)
    p.add_argument("--dataset", default="mnist", choices=DATASETS)
    p.add_argument("--labels", type=int, default=100, help="label budget N (a multiple of the number of classes)")
    p.add_argument("--seed", type=int, default=0, help="seed of the label draw and of training")
    p.add_argument("--init", type=at_least(0), default=0, help=">0: another initialisation for the same label draw")
    p.add_argument("--out", default=None, help="run folder (default checkpoints/MODEL-DATASET-nN-sSEED[-iINIT])")
    p.add_argument("--label-free", action="store_true",
                   help="M1+M2: train the stage on U alone, without labels: a start for M1+M2 runs (--m1-run)")
    p.add_argument("--recipe", action="store_true",
                   help="the results recipe for --model at --labels (epochs, learning rates, KL warm-up, hidden "
                        "sizes, M1's classifier); flags given explicitly still win")
    p.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="go on with an interrupted or stopped run from its last finished epoch, with its own "
                        "settings (other training flags are ignored)")
    p.add_argument("--fresh-m1", action="store_true",
                   help=f"M1+M2 on MNIST: train a new M1 first instead of starting from the shipped {SHIPPED_M1} "
                        f"(with --recipe: the recipe from scratch, an M1 of {FROM_SCRATCH['m1_epochs']} epochs)")
    add_train_args(p)
    for flag in ("lr", "lr-final", "kl-warmup"):
        p.add_argument(f"--m1-{flag}", type=float, default=None,
                       help=f"M1+M2: --{flag} of its M1 stage (default: --{flag})")
    p.set_defaults(func=cmd_train, **{k: None for k in RECIPE_FLAGS})  # None: the recipe or the default fills it

    p = sub.add_parser("eval", help="test error and confusion matrix of a saved run")
    p.add_argument("run_dir")
    add_data_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("export", help="copy a run (e.g. into checkpoints/pretrained/) with float16 weights")
    p.add_argument("run_dir")
    p.add_argument("dest")
    p.add_argument("--float32", action="store_true", help="keep float32 weights")
    p.add_argument("--m1", action="store_true", help="export only the M1 of an M1+M2 run, as an m1 run")
    add_data_args(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("list", help="list saved runs")
    p.add_argument("--root", default="checkpoints")
    p.set_defaults(func=cmd_list)

    bench.add_parser(sub)
    probe.add_parser(sub)
    reproduce.add_parser(sub)
    sweep.add_parser(sub)

    a = parser.parse_args(argv)
    if getattr(a, "data_dir", None) is None and hasattr(a, "data_dir"):
        a.data_dir = str(default_data_root())
    flush_denormals()  # before the first torch operation starts torch's worker threads
    try:
        return a.func(a)
    except (DataError, CheckpointError, TrainingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
