"""Data: IDX files in torchvision's layout, the paper's splits, the seeded balanced label budget."""

import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

from ssvae_core.data import MNIST_FILES, label_split, load_dataset, load_mnist, shifted
from ssvae_core.errors import DataError


def write_idx(path, array: np.ndarray) -> None:
    """An IDX file as LeCun's format defines it: magic (0, 0, dtype 0x08, ndim), big-endian dims, bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fake_mnist(tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (120, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(120) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (30, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(30) % 10,
    }
    for name, arr in arrays.items():
        write_idx(raw / name, arr)
    return tmp_path, arrays


def test_mnist_reads_idx_and_splits_last_sixth_for_validation(fake_mnist):
    root, arrays = fake_mnist
    d = load_mnist(root, download=False)
    assert d.x_train.shape == (100, 784) and d.x_val.shape == (20, 784) and d.x_test.shape == (30, 784)
    imgs = arrays["train-images-idx3-ubyte"]
    assert torch.allclose(d.x_train[3], torch.tensor(imgs[3].reshape(-1) / 255.0, dtype=torch.float32))
    assert torch.allclose(d.x_val[0], torch.tensor(imgs[100].reshape(-1) / 255.0, dtype=torch.float32))
    assert d.y_test.tolist() == (np.arange(30) % 10).tolist()
    assert d.image_shape == (1, 28, 28) and d.num_classes == 10


def test_missing_mnist_offline_says_where_to_put_files(tmp_path):
    with pytest.raises(DataError) as e:
        load_mnist(tmp_path / "nowhere", download=False)
    msg = str(e.value)
    assert str((tmp_path / "nowhere" / "MNIST" / "raw").resolve()) in msg
    assert all(name in msg for name in MNIST_FILES) and "digits" in msg


def test_cli_missing_data_prints_message_not_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ssvae_core", "train", "--dataset", "mnist", "--no-download",
                        "--data-dir", str(tmp_path), "--epochs", "1"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "train-images-idx3-ubyte" in r.stderr and "Traceback" not in r.stderr


def test_digits_is_embedded_and_split(digits):
    assert (len(digits.x_train), len(digits.x_val), len(digits.x_test)) == (1197, 300, 300)
    assert digits.x_train.shape[1] == 64 and 0.0 <= digits.x_train.min() and digits.x_train.max() <= 1.0
    assert load_dataset("digits").y_test.tolist() == digits.y_test.tolist()


@pytest.mark.parametrize("n", [10, 50, 100])
def test_label_budget_is_balanced_disjoint_and_complete(digits, n):
    lab, unl = label_split(digits.y_train, n, 10, seed=3)
    assert len(lab) == n
    assert torch.bincount(digits.y_train[lab], minlength=10).tolist() == [n // 10] * 10
    assert len(set(lab.tolist()) & set(unl.tolist())) == 0
    assert sorted(lab.tolist() + unl.tolist()) == list(range(len(digits.y_train)))


def test_label_budget_depends_only_on_seed(digits):
    a, _ = label_split(digits.y_train, 100, 10, seed=7)
    b, _ = label_split(digits.y_train.clone(), 100, 10, seed=7)
    c, _ = label_split(digits.y_train, 100, 10, seed=8)
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()
    # a fresh interpreter (other process, other torch/numpy global state) draws the same indices
    code = ("import torch; from ssvae_core.data import load_digits, label_split; torch.manual_seed(123);"
            "print(label_split(load_digits().y_train, 100, 10, 7)[0].tolist())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(a.tolist())


@pytest.mark.parametrize("n", [0, -10, 15, 10_000])
def test_bad_label_budget_is_refused_clearly(digits, n):
    with pytest.raises(DataError, match="label budget"):
        label_split(digits.y_train, n, 10, seed=0)


def test_unknown_dataset():
    with pytest.raises(DataError, match="Unknown dataset"):
        load_dataset("cifar")


def _moved(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """img (C×H×W) moved dy down and dx across, zeros coming in: the reference the vectorised `shifted` must match."""
    out = torch.zeros_like(img)
    h, w = img.shape[1:]
    out[:, max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)] = img[:, max(0, -dy):h - max(0, dy),
                                                                      max(0, -dx):w - max(0, dx)]
    return out


@pytest.mark.parametrize("shape,most", [((1, 8, 8), 2), ((3, 5, 7), 1)])
def test_shifted_moves_each_image_by_its_own_offset_within_the_bound(shape, most):
    torch.manual_seed(0)
    n = 400
    x = torch.rand(n, int(np.prod(shape))) + 0.1  # no zero pixel: an offset is read off unambiguously
    out = shifted(x, shape, most)
    assert out.shape == x.shape
    offsets = range(-most, most + 1)
    seen = set()
    for img, got in zip(x.view(n, *shape), out.view(n, *shape), strict=True):
        match = [(dy, dx) for dy in offsets for dx in offsets if torch.equal(_moved(img, dy, dx), got)]
        assert len(match) == 1, "each image is its input moved by exactly one offset within the bound"
        seen.add(match[0])
    assert len(seen) == (2 * most + 1) ** 2  # every offset is drawn (400 images, at most 25 offsets)


def test_shifted_by_zero_pixels_is_the_input():
    x = torch.rand(10, 64)
    assert torch.equal(shifted(x, (1, 8, 8), 0), x)
