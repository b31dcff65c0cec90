"""Table 1 of the paper: train a chosen subset (model × N × seeds), resume finished runs, print ours beside theirs.

python -m ssvae_core reproduce --models m2,m1m2 --labels 100 --seeds 0,1,2 --out runs/table1
M1+M2 runs share one M1 (unsupervised, label-free), trained once into OUT/m1 and reused.
--restarts K trains K initialisations of each label draw and keeps the one with the lowest validation error.
Unless given as flags, epochs, learning rates and hidden sizes come from RECIPE, per model (measured in the README);
M1+M2's stage runs longer from N=1000 labels on (LONGER_STAGE).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from ssvae_core.data import load_dataset

PAPER = {  # Kingma et al. 2014, Table 1: MNIST test error (%) with N labels
    "m2": {100: 11.97, 600: 4.94, 1000: 3.60, 3000: 3.92},
    "m1m2": {100: 3.33, 600: 2.59, 1000: 2.40, 3000: 2.18},
    "m1": {100: 11.82, 600: 5.72, 1000: 4.24, 3000: 3.49},  # M1+TSVM
}
RECIPE = {  # per-model defaults of `reproduce` (measured in the README); any flag given on the command line wins
    # the shared M1, for --m1-epochs epochs, its KL weight rising from 0 to 1 over the first 60 (README)
    "m1": {"lr": 1e-3, "lr_final": 1e-4, "hidden": [500], "kl_warmup": 60.0},
    "m2": {"epochs": 45, "lr": 3e-3, "lr_final": 3e-4, "hidden": [500, 500], "kl_warmup": 0.0},  # two layers: README
    "m1m2": {"epochs": 150, "lr": 3e-3, "lr_final": 3e-4, "hidden": [500], "kl_warmup": 0.0},
    "supervised": {"epochs": 20, "lr": 1e-3, "lr_final": 1e-4, "hidden": [500, 500], "kl_warmup": 0.0},
}
LONGER_STAGE = {"m1m2": (1000, 200)}  # from N=1000 labels on, M1+M2's stage runs 200 epochs (validation: README)
M1_EPOCHS = 150  # the shared M1's epochs (--m1-epochs)
LABEL = {"m1": "M1", "m2": "M2", "m1m2": "M1+M2", "supervised": "supervised"}


def _done(run_dir: Path) -> dict | None:
    """run.json of a finished (not interrupted) run, else None."""
    from ssvae_core.checkpoints import read_meta
    from ssvae_core.errors import CheckpointError

    try:
        meta = read_meta(run_dir)
    except CheckpointError:
        return None
    return None if meta.get("stopped") else meta


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


def recipe(model: str, labels: int | None = None) -> dict:
    """RECIPE[model], with the longer stage of LONGER_STAGE where `labels` reaches its threshold."""
    r = dict(RECIPE[model])
    if labels is not None and model in LONGER_STAGE and labels >= LONGER_STAGE[model][0]:
        r["epochs"] = LONGER_STAGE[model][1]
    return r


def _with_recipe(a: argparse.Namespace, model: str, labels: int | None = None) -> argparse.Namespace:
    """The flags, with the model's recipe (at `labels`) filling those not given on the command line."""
    filled = {k: v for k, v in recipe(model, labels).items() if getattr(a, k) is None}
    return argparse.Namespace(**{**vars(a), **filled})


def recipe_settings(model: str, labels: int | None = None) -> dict:
    """What `reproduce` trains `model` with at `labels` (the Train page offers these): epochs, lr, lr_final,
    kl_warmup, hidden, and for M1+M2's M1 stage the shared M1's m1_epochs, m1_lr, m1_lr_final, m1_kl_warmup."""
    r, m1 = recipe(model, labels), RECIPE["m1"]
    return {"epochs": r.get("epochs", M1_EPOCHS), "lr": r["lr"], "lr_final": r["lr_final"],
            "kl_warmup": r["kl_warmup"], "hidden": list(r["hidden"]), "m1_epochs": M1_EPOCHS, "m1_lr": m1["lr"],
            "m1_lr_final": m1["lr_final"], "m1_kl_warmup": m1["kl_warmup"]}


def _stopped() -> int:
    """Ctrl-C or `kill` ends the whole grid, not only the run in progress."""
    print("Stopped. Finished runs are kept; the same command resumes (the stopped run starts over).")
    return 1


def cmd_reproduce(a: argparse.Namespace) -> int:
    from ssvae_core.checkpoints import wall
    from ssvae_core.cli import config_from_args, run_training

    out = Path(a.out)
    models = a.models.split(",")
    labels = [int(n) for n in a.labels.split(",")]
    seeds = [int(s) for s in a.seeds.split(",")]
    data = load_dataset(a.dataset, a.data_dir, download=not a.no_download)
    m1_dir = Path(a.m1_run) if a.m1_run else out / "m1"
    if "m1m2" in models and not a.m1_run:
        m1_cfg = config_from_args(_with_recipe(a, "m1"), "m1", labels[0], 0, a.dataset)
        m1_cfg.epochs = a.m1_epochs
        m1_meta = _done(m1_dir)
        if m1_meta is None:
            print(f"== M1 (shared by every M1+M2 run) -> {m1_dir}")
            if run_training(m1_cfg, data, m1_dir).get("stopped"):
                return _stopped()
        elif diffs := differences(m1_meta, m1_cfg, ignore={"labels"}):  # M1 is label-free
            return _refuse(m1_dir, diffs)
    rows = []
    for model in models:
        m1 = m1_dir if model == "m1m2" else None
        for n in labels:
            for seed in seeds:
                runs = []  # (run folder, run.json) of each initialisation of this label draw
                for init in range(a.restarts):
                    run_dir = out / (f"{model}-n{n}-s{seed}" + (f"-i{init}" if init else ""))
                    meta = _done(run_dir)
                    cfg = config_from_args(_with_recipe(a, model, n), model, n, seed, a.dataset, init)
                    if meta is not None and (diffs := differences(meta, cfg, m1_dir=m1)):
                        return _refuse(run_dir, diffs)
                    what = f"{LABEL[model]} N={n} seed={seed}" + (f" init={init}" if init else "")
                    if meta is None:
                        print(f"== {what} -> {run_dir}")
                        t0 = time.time()
                        meta = run_training(cfg, data, run_dir, m1_run=str(m1) if m1 else None, half=a.half)
                        if meta.get("stopped"):
                            return _stopped()
                        print(f"   done in {time.time() - t0:.0f}s: test error {meta['best']['test_error']:.2f}%")
                    else:
                        print(f"== {what}: finished earlier, reusing {run_dir}")
                    runs.append((run_dir, meta))
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
                    seconds, measured = seconds + m1_seconds, measured and m1_measured
                rows.append({"model": model, "labels": n, "seed": seed, "test_error": meta["best"]["test_error"],
                             "best_epoch": meta["best"]["epoch"], "epochs": meta["epochs"],
                             "to_paper": epochs_to(meta["history"], model, PAPER.get(model, {}).get(n)),
                             "seconds": seconds, "wall": measured, "device": meta["device"], "inits": len(runs)})
    print()
    print(f"{a.dataset} test error (%), model chosen on validation; ep→paper: first epoch at or below the paper's "
          "test error; wall s: training and per-epoch evaluation, including the shared M1 for M1+M2 "
          "(*: runs saved before evaluation was timed, training steps only)"
          + ("" if a.dataset == "mnist" else "; the paper column is MNIST's"))
    print(table(rows))
    return 0


def add_parser(sub) -> None:
    """Register `reproduce` on the CLI."""
    from ssvae_core.cli import add_train_args, at_least

    p = sub.add_parser("reproduce", help="train model × N × seeds on MNIST and print Table 1 (resumes)")
    p.add_argument("--models", default="m2,m1m2", help="comma-separated, e.g. m2,m1m2")
    p.add_argument("--labels", default="100", help="comma-separated label budgets, e.g. 100,600,1000,3000")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (label draws)")
    p.add_argument("--dataset", default="mnist", help="mnist (the paper's Table 1) or another for a quick check")
    p.add_argument("--restarts", type=at_least(1), default=1,
                   help="initialisations per label draw; the one with the lowest validation error is kept")
    p.add_argument("--out", default="runs/table1", help="folder for the runs (finished runs are reused)")
    add_train_args(p)
    # None: the model's RECIPE fills it
    p.set_defaults(func=cmd_reproduce, epochs=None, lr=None, lr_final=None, hidden=None, kl_warmup=None,
                   m1_epochs=M1_EPOCHS)
