"""Slow checks on the real MNIST files (run in CI when ../shared/data exists)."""

import pytest
import torch

from ssvae_core.data import label_split, load_mnist

pytestmark = pytest.mark.slow


def test_real_mnist_splits(mnist_root):
    d = load_mnist(mnist_root, download=False)
    assert (len(d.x_train), len(d.x_val), len(d.x_test)) == (50_000, 10_000, 10_000)
    assert d.x_train.shape[1] == 784 and float(d.x_train.max()) == 1.0
    lab, unl = label_split(d.y_train, 100, 10, seed=0)
    assert torch.bincount(d.y_train[lab], minlength=10).tolist() == [10] * 10
    assert len(unl) == 49_900
