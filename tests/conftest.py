"""Shared fixtures: the embedded digits set, and real MNIST when it is beside the checkout."""

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # tiny models: no gain from more, and no thrashing beside other jobs

ROOT = Path(__file__).resolve().parents[1]


def real_data_root() -> Path | None:
    """The MNIST data root for slow checks: $SSVAE_DATA_DIR or ../shared/data, if it holds MNIST."""
    for cand in (os.environ.get("SSVAE_DATA_DIR"), ROOT.parent / "shared" / "data"):
        if cand and (Path(cand) / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
            return Path(cand)
    return None


@pytest.fixture(scope="session")
def digits():
    from ssvae_core.data import load_digits

    return load_digits()


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    root = real_data_root()
    if root is None:
        pytest.skip("real MNIST not found (../shared/data or $SSVAE_DATA_DIR)")
    return root
