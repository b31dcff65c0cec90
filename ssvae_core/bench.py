"""Throughput benchmark: seconds per epoch and images per second of the real training loop, per model.

`python -m ssvae_core bench` prints, for M1, M2 and M1+M2 on the current device, the time of one
full training epoch, the images per second, the GFLOP/s the loop reaches (matmul FLOPs of a step,
forward and backward, counted by torch's FlopCounterMode) and that as a fraction of the machine's
measured float32 matmul throughput. Each model has the hidden sizes of its `reproduce` recipe.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from ssvae_core.data import load_dataset
from ssvae_core.models import ModelConfig
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
    from torch.utils.flop_counter import FlopCounterMode

    model, kind = trainer.model, trainer.cfg.model.kind
    q_z1 = trainer.q_z1_train(model) if kind == "m1m2" else None  # outside the count: once per run, as in training
    counter = FlopCounterMode(display=False)
    with counter:
        trainer.batch_terms(model, kind, li, u, q_z1, 1.0)["loss"].backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def bench_model(kind: str, data, device: str, labels: int, epochs: int) -> dict:
    """Train `kind`, shaped as `reproduce`'s recipe, for `epochs` real epochs (M1+M2: one M1 epoch first) and
    measure the last one."""
    from ssvae_core.reproduce import RECIPE

    model = ModelConfig(kind=kind, hidden=RECIPE[kind]["hidden"])
    cfg = TrainConfig(model=model, dataset=data.name, labels=labels, epochs=epochs, m1_epochs=1, device=device)
    trainer = Trainer(cfg, data)
    history = list(trainer.epochs())
    rec = history[-1]
    flops = step_flops(trainer, trainer.lab_idx[: cfg.labelled_batch], trainer.unl_idx[: cfg.batch_size])
    steps_per_s = rec["images_per_s"] / cfg.batch_size
    return {"model": kind, "seconds_per_epoch": rec["seconds"], "images_per_s": rec["images_per_s"],
            "gflops": flops * steps_per_s / 1e9}


def cmd_bench(a: argparse.Namespace) -> int:
    device = resolve_device(a.device)
    torch.set_num_threads(torch.get_num_threads())
    data = load_dataset(a.dataset, a.data_dir, download=not a.no_download)
    peak = matmul_gflops(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device: {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"dataset {data.name} ({len(data.x_train)} training images), {a.labels} labels")
    print(f"measured float32 matmul throughput: {peak:.1f} GFLOP/s")
    print(f"{'model':<8}{'s/epoch':>10}{'images/s':>12}{'GFLOP/s':>10}{'of peak':>9}")
    for kind in a.models.split(","):
        r = bench_model(kind, data, a.device, a.labels, a.epochs)
        print(f"{r['model']:<8}{r['seconds_per_epoch']:>10.2f}{r['images_per_s']:>12.0f}"
              f"{r['gflops']:>10.1f}{100 * r['gflops'] / peak:>8.1f}%", flush=True)
    return 0


def add_parser(sub) -> None:
    """Register `bench` on the CLI."""
    p = sub.add_parser("bench", help="seconds per epoch and images/s of M1, M2, M1+M2 on this device")
    p.add_argument("--models", default="m1,m2,m1m2", help="comma-separated models to time")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--labels", type=int, default=100)
    p.add_argument("--epochs", type=int, default=1, help="epochs to run; the last one is timed")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--no-download", action="store_true")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=cmd_bench)
