"""Datasets as whole tensors, the paper's splits, and the seeded, class-balanced label budget."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ssvae_core.errors import DataError

DATASETS = ("mnist", "digits", "svhn", "norb")
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass
class Dataset:
    """Train / validation / test images (N×D floats in [0,1]) and labels (N int64)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    image_shape: tuple[int, int, int]  # (channels, height, width)
    num_classes: int

    @property
    def x_dim(self) -> int:
        return int(np.prod(self.image_shape))

    def to(self, device: torch.device | str) -> Dataset:
        """The same dataset with every tensor on `device`."""
        moved = {k: getattr(self, k).to(device) for k in
                 ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}
        return replace(self, **moved)


def default_data_root() -> Path:
    """$SSVAE_DATA_DIR, else ./data, else ../shared/data when it exists, else ./data."""
    env = os.environ.get("SSVAE_DATA_DIR")
    if env:
        return Path(env)
    for candidate in (Path("data"), Path("..") / "shared" / "data"):
        if (candidate / "MNIST" / "raw").is_dir():
            return candidate
    return Path("data")


def split_validation(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Last min(10000, n/6) training images become validation (MNIST: 50,000 / 10,000)."""
    n_val = min(10_000, len(x) // 6)
    return x[:-n_val], y[:-n_val], x[-n_val:], y[-n_val:]


def _mnist_missing_message(root: Path) -> str:
    files = ", ".join(MNIST_FILES)
    return (f"MNIST not found and could not be downloaded (offline?). Put the four IDX files "
            f"({files}; .gz also works) in {root.resolve() / 'MNIST' / 'raw'}/ , or pass another "
            f"data root with --data-dir / SSVAE_DATA_DIR. The offline 'digits' dataset needs no files.")


def load_mnist(root: str | Path, download: bool = True) -> Dataset:
    """MNIST through torchvision: 50,000 train, 10,000 validation, 10,000 test."""
    from torchvision.datasets import MNIST  # torchvision loads slowly; only MNIST needs it

    root = Path(root)
    sets = []
    for train in (True, False):
        try:
            ds = MNIST(str(root), train=train, download=False)
        except RuntimeError:
            if not download:
                raise DataError(_mnist_missing_message(root)) from None
            try:
                ds = MNIST(str(root), train=train, download=True)
            except Exception:  # offline: URLError, timeouts, partial files
                raise DataError(_mnist_missing_message(root)) from None
        except Exception as exc:  # malformed IDX files
            raise DataError(f"MNIST files in {root / 'MNIST' / 'raw'} could not be read: {exc}") from None
        sets.append((ds.data.reshape(len(ds.data), -1).float() / 255.0, ds.targets.long()))
    (x, y), (x_test, y_test) = sets
    x_train, y_train, x_val, y_val = split_validation(x, y)
    return Dataset("mnist", x_train, y_train, x_val, y_val, x_test, y_test, (1, 28, 28), 10)


def load_digits() -> Dataset:
    """scikit-learn's embedded 8×8 digits (1,797 images): 1,197 train, 300 validation, 300 test."""
    from sklearn.datasets import load_digits as sk_digits  # scikit-learn loads slowly; only digits needs it

    d = sk_digits()
    order = np.random.default_rng(0).permutation(len(d.target))
    x = torch.tensor(d.data[order] / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target[order], dtype=torch.int64)
    return Dataset("digits", x[:1197], y[:1197], x[1197:1497], y[1197:1497],
                   x[1497:], y[1497:], (1, 8, 8), 10)


def load_svhn_dataset(root: str | Path) -> Dataset:
    """SVHN (32×32 RGB): train minus its last 10,000 images, which validate; the test split."""
    from ssvae_core.formats import load_svhn  # imports torchvision and scipy, slow to load: only SVHN needs them

    x, y = load_svhn(root, "train")
    x_test, y_test = load_svhn(root, "test")
    x_train, y_train, x_val, y_val = split_validation(x, y)
    return Dataset("svhn", x_train, y_train, x_val, y_val, x_test, y_test, (3, 32, 32), 10)


def load_norb_dataset(root: str | Path) -> Dataset:
    """small NORB at 32×32 (first camera), 5 classes; the last sixth of train validates."""
    from ssvae_core.formats import load_norb  # imports torchvision and scipy, slow to load: only NORB needs them

    x, y = load_norb(root, "train")
    x_test, y_test = load_norb(root, "test")
    # the training file is ordered by object instance; shuffle (fixed) before splitting off validation
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(y)))
    x_train, y_train, x_val, y_val = split_validation(x[order], y[order])
    return Dataset("norb", x_train, y_train, x_val, y_val, x_test, y_test, (1, 32, 32), 5)


def load_dataset(name: str, root: str | Path | None = None, download: bool = True) -> Dataset:
    """Load one of DATASETS by name from `root` (default: default_data_root())."""
    root = Path(root) if root is not None else default_data_root()
    if name == "mnist":
        return load_mnist(root, download=download)
    if name == "digits":
        return load_digits()
    if name == "svhn":
        return load_svhn_dataset(root)
    if name == "norb":
        return load_norb_dataset(root)
    raise DataError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.")


def label_split(y: torch.Tensor, n_labels: int, num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (labelled, unlabelled): n_labels/K per class drawn with `seed`; the rest unlabelled."""
    if n_labels <= 0 or n_labels % num_classes:
        raise DataError(f"The label budget must be a positive multiple of {num_classes} "
                        f"(one equal share per class); got {n_labels}.")
    per_class = n_labels // num_classes
    y_np = y.cpu().numpy()
    rng = np.random.default_rng(seed)  # PCG64: the same draw on every machine
    chosen = []
    for c in range(num_classes):
        idx = np.flatnonzero(y_np == c)
        if len(idx) < per_class:
            raise DataError(f"The label budget {n_labels} needs {per_class} images of class {c}, "
                            f"but the training pool has only {len(idx)}.")
        chosen.append(rng.permutation(idx)[:per_class])
    labelled = np.sort(np.concatenate(chosen))
    unlabelled = np.setdiff1d(np.arange(len(y_np)), labelled)
    return torch.from_numpy(labelled), torch.from_numpy(unlabelled)


def shifted(x: torch.Tensor, image_shape: tuple[int, int, int], most: int) -> torch.Tensor:
    """Each image of `x` (rows of C·H·W pixels) moved by its own random whole-pixel offset, down and across each in
    [-most, most], zeros coming in at the edges (the M2 recipe's augmentation of its labelled images)."""
    n, (c, h, w) = len(x), image_shape
    padded = torch.nn.functional.pad(x.view(n, c, h, w), (most, most, most, most))
    dy, dx = torch.randint(0, 2 * most + 1, (2, n, 1), device=x.device)
    rows = (dy + torch.arange(h, device=x.device))[:, None, :, None]  # n × 1 × h × 1 rows of the padded image
    cols = (dx + torch.arange(w, device=x.device))[:, None, None, :]
    image = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[image, channel, rows, cols].reshape(n, c * h * w)
