"""Throughput benchmark: seconds per epoch and images per second of the real training loop, per model.

`python -m ssvae_core bench` prints, for M1, M2 and M1+M2 on the current device, the time of one
full training epoch, the images per second, the GFLOP/s the loop reaches (matmul FLOPs of a step,
forward and backward, counted by torch's FlopCounterMode) and that as a fraction of the machine's
measured float32 matmul throughput. Each model has the hidden sizes of its `reproduce` recipe.

`python -m ssvae_core bench --to-target` trains each model with its full recipe (M1+M2 from the shipped M1 on
MNIST) on each label draw and prints, per epoch, the wall seconds so far and the validation and test error, then
the epoch and wall time at which validation error first reached the model's target (TARGETS), beside the matmul
throughput measured in the same run, so runs on different machines or days compare as ratios.

`python -m ssvae_core bench --batched R` times one epoch of R runs of M2 and of M1+M2 (each from the same untrained
M1, every z1 unit kept: timing only) trained one by one, then the same R runs stacked in one batch (batched.py),
and prints both, the speed-up and the GFLOP/s of each.
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from ssvae_core.batched import BatchedTrainer
from ssvae_core.checkpoints import holds_clusters, stage_start, start_m1
from ssvae_core.data import load_dataset
from ssvae_core.flags import add_data_args, at_least
from ssvae_core.models import M1, ModelConfig
from ssvae_core.recipes import RECIPE, SHIPPED_M1, TARGETS, recipe_settings
from ssvae_core.train import TrainConfig, Trainer, resolve_device


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 10) -> float:
    """Measured float32 GFLOP/s of an n×n matmul on `device` (the machine's practical peak)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9


def step_flops(trainer: Trainer, li: torch.Tensor, u: torch.Tensor) -> float:
    """Matmul FLOPs of one training step (the trainer's own batch_terms), forward and backward, by FlopCounterMode."""
    model, kind = trainer.model, trainer.cfg.model.kind
    q_z1 = trainer.q_z1_train(model) if kind == "m1m2" else None  # outside the count: once per run, as in training
    counter = FlopCounterMode(display=False)
    with counter:
        trainer.batch_terms(model, kind, li, u, q_z1, 1.0)["loss"].backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def bench_model(kind: str, data, device: str, labels: int, epochs: int, compile: bool = False) -> dict:
    """Train `kind`, shaped as `reproduce`'s recipe, for `epochs` real epochs (M1+M2: one M1 epoch first) and
    measure the last one."""
    model = ModelConfig(kind=kind, hidden=RECIPE[kind]["hidden"])
    cfg = TrainConfig(model=model, dataset=data.name, labels=labels, epochs=epochs, m1_epochs=1, device=device,
                      compile=compile)
    trainer = Trainer(cfg, data)
    history = list(trainer.epochs())
    rec = history[-1]
    flops = step_flops(trainer, trainer.lab_idx[: cfg.labelled_batch], trainer.unl_idx[: cfg.batch_size])
    steps_per_s = rec["images_per_s"] / cfg.batch_size
    return {"model": kind, "seconds_per_epoch": rec["seconds"], "images_per_s": rec["images_per_s"],
            "gflops": flops * steps_per_s / 1e9}


def bench_batched(kind: str, data, device: str, labels: int, runs: int, epochs: int) -> dict:
    """Seconds of one epoch (the last of `epochs`, training steps only) of `runs` runs of `kind` with the recipe's
    sizes, one after another and batched, and the matmul GFLOP/s each reaches."""
    model = ModelConfig(kind=kind, hidden=RECIPE[kind]["hidden"])
    cfgs = [TrainConfig(model=ModelConfig(**vars(model)), dataset=data.name, labels=labels, seed=seed, epochs=epochs,
                        device=device, active_threshold=0.0) for seed in range(runs)]
    m1_state = None
    if kind == "m1m2":  # timing only: an untrained M1 shared by every run
        torch.manual_seed(0)
        m1_state = M1(data.x_dim, model, tuple(data.image_shape)).state_dict()
    one_by_one = 0.0
    for cfg in cfgs:
        trainer = Trainer(cfg, data, m1_state=m1_state)
        one_by_one += list(trainer.epochs())[-1]["seconds"]
    batch = BatchedTrainer(cfgs, data, m1_state=m1_state)
    batched = list(batch.epochs())[-1][0]["seconds"] * runs  # each run's record holds its 1/R share
    steps = math.ceil(len(trainer.unl_idx) / cfgs[0].batch_size)
    flops = runs * steps * step_flops(trainer, trainer.lab_idx[: cfgs[0].labelled_batch],
                                      trainer.unl_idx[: cfgs[0].batch_size])
    return {"model": kind, "runs": runs, "one_by_one": one_by_one, "batched": batched,
            "gflops_one_by_one": flops / one_by_one / 1e9, "gflops_batched": flops / batched / 1e9}


def to_target(kind: str, data, labels: int, seed: int, device: str, m1_run: str | None, until_target: bool,
              out=print, compile: bool = False) -> dict:
    """Train `kind` with its recipe on label draw `seed`, printing each epoch's wall seconds and errors; returns the
    first epoch and wall seconds at which validation error reached TARGETS[kind], and the best errors."""
    r = recipe_settings(kind, labels, stage_start(m1_run), data.name)
    model = ModelConfig(kind=kind, hidden=r["hidden"])
    cfg = TrainConfig(model=model, dataset=data.name, labels=labels, seed=seed, device=device, compile=compile,
                      **{k: r[k] for k in ("epochs", "lr", "lr_final", "kl_warmup", "ema", "alpha", "shift",
                                          "m1_epochs", "m1_lr", "m1_lr_final", "m1_kl_warmup")})
    trainer = Trainer(cfg, data, m1_state=start_m1(cfg, m1_run)[0])
    target, hit = TARGETS[kind], None
    for rec in trainer.epochs():
        wall = trainer.wall_seconds
        if rec["stage"] != kind:
            out(f"  [{rec['stage']}] epoch {rec['epoch']:3d}  {wall:8.1f}s")
            continue
        out(f"  [{kind}] epoch {rec['epoch']:3d}  {wall:8.1f}s  val {rec['val_error']:6.2f}%  "
            f"test {rec['test_error']:6.2f}%")
        if hit is None and rec["val_error"] <= target:
            hit = {"epoch": rec["epoch"], "seconds": wall, "test_error": rec["test_error"]}
            if until_target:
                trainer.stop()
    return {"model": kind, "seed": seed, "target": target, "hit": hit, "best_val": trainer.best["val_error"],
            "best_test": trainer.best["test_error"], "epochs": cfg.epochs, "wall": trainer.wall_seconds}


def cmd_to_target(a: argparse.Namespace, device: torch.device, peak: float) -> int:
    data = load_dataset(a.dataset, a.data_dir, download=not a.no_download)
    m1_run = a.m1_run or (None if a.fresh_m1 or a.dataset != "mnist" else SHIPPED_M1)
    speed = f"measured float32 matmul throughput: {peak:.1f} GFLOP/s ({device}, {torch.get_num_threads()} threads)"
    print(speed, flush=True)  # first as well as last, so that a run cut short still says how fast this machine was
    rows = []
    for kind in a.models.split(","):
        for seed in [int(s) for s in a.seeds.split(",")]:
            start = (f", {'M1 and clusters' if holds_clusters(m1_run) else 'M1'} {m1_run}" if m1_run
                     else ", from scratch (its M1 first)")
            print(f"{kind} N={a.labels} seed {seed}" + (start if kind == "m1m2" else ""), flush=True)
            rows.append(to_target(kind, data, a.labels, seed, a.device, m1_run, a.until_target,
                                  out=lambda line: print(line, flush=True), compile=a.compile))
    print(f"\n{speed}")
    print(f"{'model':<7}{'seed':>5}{'target':>8}{'epoch':>7}{'seconds':>9}{'test then':>11}{'best val':>10}"
          f"{'its test':>10}{'wall s':>8}")
    for r in rows:
        h = r["hit"] or {}
        print(f"{r['model']:<7}{r['seed']:>5}{r['target']:>7.2f}%{h.get('epoch', '-'):>7}"
              f"{h.get('seconds', float('nan')):>9.0f}{h.get('test_error', float('nan')):>10.2f}%"
              f"{r['best_val']:>9.2f}%{r['best_test']:>9.2f}%{r['wall']:>8.0f}")
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    device = resolve_device(a.device)
    if a.to_target:
        a.models = a.models or "m1m2,m2"
        return cmd_to_target(a, device, matmul_gflops(device))
    torch.set_num_threads(torch.get_num_threads())
    data = load_dataset(a.dataset, a.data_dir, download=not a.no_download)
    peak = matmul_gflops(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device: {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"dataset {data.name} ({len(data.x_train)} training images), {a.labels} labels"
          + ("; steps torch.compile'd" if a.compile else ""))
    print(f"measured float32 matmul throughput: {peak:.1f} GFLOP/s")
    if a.batched:
        print(f"{a.batched} runs of each model, one epoch each (the last of {a.epochs}), training steps only:")
        print(f"{'model':<8}{'runs':>5}{'one by one s':>14}{'batched s':>11}{'speed-up':>10}{'GFLOP/s':>9}"
              f"{'batched':>9}")
        for kind in (a.models or "m2,m1m2").split(","):
            r = bench_batched(kind, data, a.device, a.labels, a.batched, a.epochs)
            print(f"{kind:<8}{r['runs']:>5}{r['one_by_one']:>14.2f}{r['batched']:>11.2f}"
                  f"{r['one_by_one'] / r['batched']:>9.2f}x{r['gflops_one_by_one']:>9.1f}{r['gflops_batched']:>9.1f}",
                  flush=True)
        return 0
    print(f"{'model':<8}{'s/epoch':>10}{'images/s':>12}{'GFLOP/s':>10}{'of peak':>9}")
    for kind in (a.models or "m1,m2,m1m2").split(","):
        r = bench_model(kind, data, a.device, a.labels, a.epochs, a.compile)
        print(f"{r['model']:<8}{r['seconds_per_epoch']:>10.2f}{r['images_per_s']:>12.0f}"
              f"{r['gflops']:>10.1f}{100 * r['gflops'] / peak:>8.1f}%", flush=True)
    return 0


def add_parser(sub) -> None:
    """Register `bench` on the CLI."""
    p = sub.add_parser("bench", help="seconds per epoch and images/s of M1, M2, M1+M2 on this device")
    p.add_argument("--models", default=None, help="comma-separated models (default m1,m2,m1m2; --to-target: m1m2,m2)")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--labels", type=int, default=100)
    p.add_argument("--epochs", type=int, default=1, help="epochs to run; the last one is timed")
    p.add_argument("--to-target", action="store_true",
                   help="train each model's recipe and print when validation error first reaches its target")
    p.add_argument("--seeds", default="5,6,7", help="--to-target: label draws (not the ones recipes are tuned on)")
    p.add_argument("--until-target", action="store_true", help="--to-target: stop each run at its target")
    m1 = p.add_mutually_exclusive_group()
    m1.add_argument("--fresh-m1", action="store_true",
                    help="--to-target: M1+M2 trains its M1 first (the recipe from scratch)")
    m1.add_argument("--m1-run", default=None, metavar="RUN_DIR",
                    help="--to-target: M1+M2 starts from the M1 of this run folder (default: the shipped M1)")
    p.add_argument("--batched", type=at_least(2), default=None, metavar="R",
                   help="time one epoch of R runs of M2 and M1+M2 one by one, then the same R runs batched "
                        "(reproduce --batched)")
    p.add_argument("--compile", action="store_true",
                   help="train with torch.compile'd steps (CUDA graphs on a GPU); with --epochs 2 or more the timed "
                        "epoch leaves the compilation out")
    add_data_args(p)
    p.set_defaults(func=cmd_bench)
