"""Milliseconds per training step of each model, interleaved ways: the step as it was until 2026-12-05 (softplus in
two passes, torch's binary_cross_entropy_with_logits, the ten-class sum copied into class-major rows), torch's
nn.Softplus in today's step, today's step, and today's step with its loss torch.compile'd (train --compile; left out
with --no-compile).

    OMP_NUM_THREADS=2 python bench/steps.py                 # M1+M2 stage (shipped M1), M2, M1 on MNIST
    python bench/steps.py --models m1m2 --rounds 5 --steps 50

Prints the float32 matmul throughput, then per model the milliseconds per step of each way in every round and the
median of its rounds, and the speed-up of each way's median over the earlier step's (the rounds alternate, so a busy
machine slows all alike).
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

from ssvae_core import models  # noqa: E402
from ssvae_core.bench import matmul_gflops  # noqa: E402
from ssvae_core.checkpoints import start_m1  # noqa: E402
from ssvae_core.data import load_dataset  # noqa: E402
from ssvae_core.recipes import RECIPE, SHIPPED_M1  # noqa: E402
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


@contextlib.contextmanager
def earlier_step(on: bool):
    """Within it (when `on`), models computes the bound's pieces as it did until 2026-12-05."""
    saved = models.log_bernoulli, models.GaussianHead.every_class
    if on:
        models.log_bernoulli, models.GaussianHead.every_class = earlier_log_bernoulli, earlier_every_class
    try:
        yield
    finally:
        models.log_bernoulli, models.GaussianHead.every_class = saved


def stepper(kind: str, data, activation: type[nn.Module], compile: bool = False, earlier: bool = False):
    """A function running n training steps of `kind` (the recipe's sizes; M1+M2 on the shipped M1) built with
    `activation` as its softplus (and its loss compiled; or the earlier step's pieces), returning ms per step."""
    models.ACTIVATIONS["softplus"] = activation
    cfg = TrainConfig(model=models.ModelConfig(kind=kind, hidden=RECIPE[kind]["hidden"]), dataset=data.name,
                      labels=100, seed=0, epochs=0, device="cpu", compile=compile)
    trainer = Trainer(cfg, data, m1_state=start_m1(cfg, SHIPPED_M1)[0])
    list(trainer.epochs())  # no epochs: builds the model (M1+M2: on the shipped M1, its active units), trains nothing
    model = trainer.model
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    q_z1 = trainer.q_z1_train(model) if kind == "m1m2" else None
    beta = cfg.alpha * len(data.x_train) / cfg.labels

    def run(n: int) -> float:
        with earlier_step(earlier):
            t0 = time.perf_counter()
            for i in range(n):
                u = trainer.unl_idx[i * cfg.batch_size:(i + 1) * cfg.batch_size]
                li = trainer.lab_idx[torch.randint(len(trainer.lab_idx), (cfg.labelled_batch,))]
                loss = trainer.step_terms(kind)(model, kind, li, u, q_z1, beta, trainer._kl(1.0))["loss"]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
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
        runs = {"until 2026-12-05": stepper(kind, data, TwoPassSoftplus, earlier=True),
                "torch softplus": stepper(kind, data, nn.Softplus), "today": stepper(kind, data, models.Softplus)}
        if not args.no_compile:
            runs["today compiled"] = stepper(kind, data, models.Softplus, compile=True)
        ms: dict[str, list[float]] = {name: [] for name in runs}
        for run in runs.values():
            run(3)  # warm-up (and compilation)
        for _ in range(args.rounds):
            for name, run in runs.items():
                ms[name].append(run(args.steps))
        med = {name: sorted(vs)[len(vs) // 2] for name, vs in ms.items()}
        first = "until 2026-12-05"
        print(f"{kind}: ms per step in each round, their median; speed-up of the medians over the step {first}")
        for name, vs in ms.items():
            print(f"  {name:17s}" + "".join(f"{v:7.1f}" for v in vs) + f"   median {med[name]:6.1f}"
                  + f"   {med[first] / med[name]:.2f}×", flush=True)
    models.ACTIVATIONS["softplus"] = models.Softplus


if __name__ == "__main__":
    main()
