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


@pytest.fixture
def train_configs(monkeypatch) -> dict:
    """`train` on the command line without training or data: each cli.main call leaves its TrainConfig in ["cfg"]."""
    from ssvae_core import cli

    seen: dict = {}

    def fake_run(cfg, data, out, **kw) -> dict:
        seen["cfg"] = cfg
        return {"best": {"epoch": 1, "val_error": 1.0, "test_error": 1.0}, "wall_seconds": 1.0, "device": "cpu"}

    monkeypatch.setattr(cli, "run_training", fake_run)
    monkeypatch.setattr(cli, "load_dataset", lambda *a, **k: None)
    return seen
