"""Milliseconds per training step of each model (Trainer.run_epoch: the loss, Adam, the moving average where the
recipe keeps one), in interleaved ways: the step as it was until 2026-12-05 (softplus in two passes, torch's
binary_cross_entropy_with_logits, the ten-class sum copied into class-major rows, and what 2026-12-06 changed), as it
was until 2026-12-06 (M2's networks run on labelled and unlabelled rows apart, torch's default Adam, the moving average
one tensor at a time), today's step, and today's step with its loss torch.compile'd (train --compile; left out with
--no-compile).

    OMP_NUM_THREADS=2 python bench/steps.py                 # M1+M2 stage (shipped M1), M2, M1 on MNIST
    python bench/steps.py --models m1m2 --rounds 5 --steps 50

Prints the float32 matmul throughput, then per model the milliseconds per step of each way in every round and the
median of its rounds, and the speed-up of each way's median over the earliest step's (the rounds alternate, so a busy
machine slows all alike). M1+M2's stage steps as from the clusters (recipes.FROM_CLUSTERS: alpha 0.03, a moving
average of the weights); M2 and M1 as their recipes.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssvae_core import models, train  # noqa: E402
from ssvae_core.bench import matmul_gflops  # noqa: E402
from ssvae_core.checkpoints import start_m1  # noqa: E402
from ssvae_core.data import load_dataset  # noqa: E402
from ssvae_core.recipes import SHIPPED_M1, recipe  # noqa: E402
from ssvae_core.train import TrainConfig, Trainer, flush_denormals  # noqa: E402


class _two_pass(models._softplus):
    """softplus's forward as models.Softplus computed it until 2026-12-05, max(t, 0) + log(1 + e^-|t|); the same
    gradient, sigmoid(t)."""

    @staticmethod
    def forward(t: torch.Tensor) -> torch.Tensor:
        return t.clamp_min(0) + (1 + torch.exp(-t.abs())).log()


class TwoPassSoftplus(nn.Module):
    """models.Softplus as it was until 2026-12-05."""

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return _two_pass.apply(t)


def earlier_log_bernoulli(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """models.log_bernoulli as it was until 2026-12-05."""
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


def earlier_every_class(self: models.GaussianHead, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """GaussianHead.every_class as it was until 2026-12-05 (the broadcast sum's layout followed W_y's: a copy)."""
    first, d = self.net[0], x.shape[-1]
    hx = F.linear(x, first.weight[:, :d], first.bias)
    h = (hx.unsqueeze(0) + first.weight[:, d:].t().unsqueeze(1)).reshape(-1, hx.shape[-1])
    mu, logvar = self.net[1:](h).chunk(2, dim=-1)
    return mu, logvar.clamp(-12.0, 8.0)


def earlier_m2_loss(self: models.M2, x_l: torch.Tensor, y_l: torch.Tensor, x_u: torch.Tensor, beta: float,
                    kl_weight: float = 1.0, lab_weight: float = 1.0, eps: tuple | None = None) -> dict:
    """models.M2.loss as it was until 2026-12-06: L(x,y), U(x) and q(y|x) of the labelled rows each in its own pass."""
    eps_l, eps_u = eps if eps is not None else (None, None)
    lab = self.elbo_labelled(x_l, F.one_hot(y_l, self.num_classes).to(x_l.dtype), kl_weight, eps_l)
    unl = self.elbo_unlabelled(x_u, kl_weight, eps_u)
    ce = F.cross_entropy(self.classifier(x_l), y_l)
    loss = -lab_weight * lab["elbo"].mean() - unl["elbo"].mean() + beta * ce
    n_l, n_u = len(x_l), len(x_u)
    mix = lambda a, b: (a.sum() + b.sum()) / (n_l + n_u)  # noqa: E731
    return {"loss": loss, "elbo_labelled": lab["elbo"].mean(), "elbo_unlabelled": unl["elbo"].mean(),
            "log_px": mix(lab["log_px"], unl["log_px"]), "kl_z": mix(lab["kl_z"], unl["kl_z"]),
            "classification": ce, "entropy": unl["entropy"].mean()}


def earlier_adam(params: list[torch.Tensor], lr: float) -> torch.optim.Adam:
    """train.adam as it was until 2026-12-06: torch's default Adam (a loop over the tensors on the CPU)."""
    return torch.optim.Adam(params, lr=lr)


@torch.no_grad()
def earlier_ema_update(averaged: nn.Module, model: nn.Module, decay: float) -> None:
    """train.ema_update as it was until 2026-12-06: one lerp_ per tensor."""
    for a, p in zip(averaged.parameters(), model.parameters(), strict=True):
        if p.requires_grad:
            a.lerp_(p, 1.0 - decay)


EARLIER = {  # (module, name, what it was) of each piece a day's step computed otherwise, by the last day it did
    "2026-12-05": [(models, "log_bernoulli", earlier_log_bernoulli), (models.GaussianHead, "every_class",
                                                                       earlier_every_class)],
    "2026-12-06": [(models.M2, "loss", earlier_m2_loss), (train, "adam", earlier_adam),
                   (train, "ema_update", earlier_ema_update)],
}


@contextlib.contextmanager
def earlier_step(until: str | None):
    """Within it, the step is computed as it was until the day `until` (a key of EARLIER; None: today's)."""
    patches = [p for day, ps in EARLIER.items() if until is not None and day >= until for p in ps]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, value in patches:
        setattr(owner, name, value)
    try:
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


def stepper(kind: str, data, compile: bool = False, until: str | None = None):
    """A function running n training steps of `kind` (its recipe's settings; M1+M2's as from the clusters, on the
    shipped M1) as they were until the day `until` (its loss compiled with `compile`), returning ms per step."""
    models.ACTIVATIONS["softplus"] = TwoPassSoftplus if until == "2026-12-05" else models.Softplus
    r = recipe(kind, 100, "clusters")
    cfg = TrainConfig(model=models.ModelConfig(kind=kind, hidden=r["hidden"]), dataset=data.name, labels=100, seed=0,
                      epochs=0, device="cpu", compile=compile, ema=r["ema"], alpha=r["alpha"])
    trainer = Trainer(cfg, data, m1_state=start_m1(cfg, SHIPPED_M1)[0])
    list(trainer.epochs())  # no epochs: builds the model (M1+M2: on the shipped M1, its active units), trains nothing
    with earlier_step(until):
        st = trainer._stage(trainer.model, kind, cfg)  # its optimiser as the day built it
    models.ACTIVATIONS["softplus"] = models.Softplus
    pool = trainer.stage_pool(kind)
    q_z1 = trainer.q_z1_train(trainer.model) if kind == "m1m2" else None

    def run(n: int) -> float:
        with earlier_step(until):
            t0 = time.perf_counter()
            trainer.run_epoch(st, cfg, pool[:n * cfg.batch_size], n, 1000, q_z1, None)
            return (time.perf_counter() - t0) / n * 1e3
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="m1m2,m2,m1")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--no-compile", action="store_true", help="leave out the compiled way (its first compilation "
                   "takes about a minute)")
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    args = p.parse_args()
    flush_denormals()
    data = load_dataset("mnist", args.data_dir)
    print(f"float32 matmul: {matmul_gflops(torch.device('cpu')):.1f} GFLOP/s, {torch.get_num_threads()} threads")
    for kind in args.models.split(","):
        runs = {f"until {day}": stepper(kind, data, until=day) for day in EARLIER}
        runs["today"] = stepper(kind, data)
        if not args.no_compile:
            runs["today compiled"] = stepper(kind, data, compile=True)
        ms: dict[str, list[float]] = {name: [] for name in runs}
        for run in runs.values():
            run(3)  # warm-up (and compilation)
        for _ in range(args.rounds):
            for name, run in runs.items():
                ms[name].append(run(args.steps))
        med = {name: sorted(vs)[len(vs) // 2] for name, vs in ms.items()}
        first = next(iter(runs))
        print(f"{kind}: ms per step in each round, their median; speed-up of the medians over the step {first}")
        for name, vs in ms.items():
            print(f"  {name:17s}" + "".join(f"{v:7.1f}" for v in vs) + f"   median {med[name]:6.1f}"
                  + f"   {med[first] / med[name]:.2f}×", flush=True)


if __name__ == "__main__":
    main()
