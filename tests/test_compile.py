"""cfg.compile: a training step's loss through torch.compile gives the eager step's numbers and trains (on the CPU;
on CUDA the same code runs in "reduce-overhead" mode, as CUDA graphs)."""

import math

import pytest
import torch
from torch._dynamo.utils import counters
from torch._inductor import config as inductor_config

from ssvae_core.models import ModelConfig
from ssvae_core.train import TrainConfig, Trainer

pytestmark = pytest.mark.filterwarnings("ignore")


def small_cfg(kind: str, **kw) -> TrainConfig:
    model = ModelConfig(kind=kind, hidden=[32], z_dim=4, m1_hidden=[32], m1_z_dim=6)
    settings = {"labels": 50, "epochs": 2, "m1_epochs": 1, "batch_size": 200, "labelled_batch": 50, "lr": 3e-3,
                "lr_final": 1e-4, **kw}
    return TrainConfig(model=model, dataset="digits", device="cpu", **settings)


@pytest.mark.parametrize("kind", ["m2", "m1m2"])
def test_compiled_step_gives_the_eager_loss_and_gradients(digits, kind, monkeypatch):
    monkeypatch.setattr(inductor_config, "fallback_random", True)  # the same random numbers as eager
    trainer = Trainer(small_cfg(kind, compile=True), digits)
    trainer.cfg.epochs = 0  # build the model (M1+M2: train its M1), no stage epoch
    list(trainer.epochs())
    model = trainer.model
    q_z1 = trainer.q_z1_train(model) if kind == "m1m2" else None
    li, u = trainer.lab_idx[:50], trainer.unl_idx[:200]
    results = []
    for step in (trainer.batch_terms, trainer.step_terms(kind)):
        torch.manual_seed(3)
        terms = step(model, kind, li, u, q_z1, 50.0, trainer._kl(0.5), 0.1)
        model.zero_grad(set_to_none=True)
        terms["loss"].backward()
        results.append((terms, [p.grad.clone() for p in model.parameters() if p.requires_grad]))
    (eager, g_eager), (compiled, g_compiled) = results
    assert trainer.step_terms(kind) is not trainer.batch_terms
    for k in eager:
        assert torch.allclose(eager[k], compiled[k], rtol=1e-4, atol=1e-4), k
    for a, b in zip(g_eager, g_compiled, strict=True):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4)


def test_a_compiled_run_is_the_eager_run_without_recompiling_each_step(digits, monkeypatch):
    monkeypatch.setattr(inductor_config, "fallback_random", True)
    counters.clear()
    runs = [Trainer(small_cfg("m2", compile=c, kl_warmup=2.0, epochs=3), digits) for c in (False, True)]
    eager, compiled = ([(h["loss"], h["val_error"]) for h in t.epochs()] for t in runs)
    assert len(compiled) == 3 and all(math.isfinite(loss) for loss, _ in compiled)
    for (loss_e, err_e), (loss_c, err_c) in zip(eager, compiled, strict=True):
        assert loss_c == pytest.approx(loss_e, rel=1e-4) and abs(err_c - err_e) < 1.0
    # every step has a new KL weight (warm-up over 2 epochs): passed as a tensor, it costs no new graph
    assert 1 <= counters["stats"]["unique_graphs"] <= 2  # the full batches, and the last, smaller one
