"""Slow checks on the real MNIST files (run in CI when ../shared/data exists)."""

import pytest
import torch

from ssvae_core.checkpoints import load_run
from ssvae_core.data import label_split, load_mnist
from ssvae_core.train import evaluate
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mnist(mnist_root):
    return load_mnist(mnist_root, download=False)


def test_real_mnist_splits(mnist):
    d = mnist
    assert (len(d.x_train), len(d.x_val), len(d.x_test)) == (50_000, 10_000, 10_000)
    assert d.x_train.shape[1] == 784 and float(d.x_train.max()) == 1.0
    lab, unl = label_split(d.y_train, 100, 10, seed=0)
    assert torch.bincount(d.y_train[lab], minlength=10).tolist() == [10] * 10
    assert len(unl) == 49_900


SHIPPED = sorted(p.parent for p in ROOT.glob("checkpoints/pretrained/*/run.json"))


@pytest.mark.parametrize("run_dir", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_checkpoint_reproduces_its_recorded_test_error(mnist, run_dir):
    """`eval` of a shipped (float16) model gives the test error recorded when it was exported."""
    run = load_run(run_dir)
    assert run.cfg.dataset == "mnist"
    res = evaluate(run.model, run.cfg, mnist)
    assert res["test_error"] == pytest.approx(run.meta["best"]["test_error"], abs=1e-3)
