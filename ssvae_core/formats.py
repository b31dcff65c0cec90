"""Readers for SVHN (.mat files) and small NORB (LeCun binary-matrix files); no Streamlit."""

import gzip
import struct
from pathlib import Path

import numpy as np
import scipy.io
import torch
import torch.nn.functional as F
from torchvision.datasets import SVHN
from torchvision.datasets.utils import download_url

from ssvae_core.errors import DataError

SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
NORB_URL = "https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/"
NORB_PREFIXES = {
    "train": "smallnorb-5x46789x9x18x6x2x96x96-training",
    "test": "smallnorb-5x01235x9x18x6x2x96x96-testing",
}
# Element type of a binary matrix, keyed by its magic number (little-endian int32).
NORB_MAGIC_DTYPES = {
    0x1E3D4C51: np.dtype("<f4"),  # single precision
    0x1E3D4C53: np.dtype("<f8"),  # double precision
    0x1E3D4C54: np.dtype("<i4"),  # integer
    0x1E3D4C55: np.dtype("u1"),  # byte
    0x1E3D4C56: np.dtype("<i2"),  # short
}
_DTYPE_MAGIC = {dtype: magic for magic, dtype in NORB_MAGIC_DTYPES.items()}


def load_svhn(
    root: str | Path, split: str, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load an SVHN split: N×3072 float32 images in [0, 1] (C×H×W order), int64 labels 0-9."""
    if split not in SVHN.split_list:
        raise ValueError(f"split must be one of {sorted(SVHN.split_list)}, not {split!r}")
    folder = Path(root) / "SVHN"
    url, name, md5 = SVHN.split_list[split]
    path = folder / name
    if not path.is_file():
        missing = DataError(
            f"SVHN file {name} is not in {folder}. Download train_32x32.mat and "
            f"test_32x32.mat (extra_32x32.mat for 'extra') from {SVHN_URL} into that folder."
        )
        if not download:
            raise missing
        try:
            download_url(url, folder, name, md5)
        except Exception as err:  # offline, or a corrupt download: drop any partial file
            path.unlink(missing_ok=True)
            raise missing from err
    try:
        mat = scipy.io.loadmat(path)
        images, labels = mat["X"], mat["y"].astype(np.int64).ravel()
    except Exception as err:
        raise DataError(
            f"{path} is not a readable SVHN .mat file ({err}). "
            f"Delete it and download it again from {SVHN_URL}."
        ) from err
    shape_ok = images.ndim == 4 and images.shape[:3] == (32, 32, 3)
    if not shape_ok or images.dtype != np.uint8 or images.shape[3] != len(labels):
        raise DataError(
            f"{path} holds X of shape {images.shape} ({images.dtype}) and {len(labels)} labels; "
            "expected 32×32×3×N uint8 images and N labels. Delete it and download it again."
        )
    labels[labels == 10] = 0  # SVHN stores the digit 0 as label 10
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path} has labels outside 0-10. Delete it and download it again.")
    chw = np.ascontiguousarray(images.transpose(3, 2, 0, 1))  # H×W×C×N -> N×C×H×W
    x = torch.from_numpy(chw).reshape(len(labels), -1).float().div_(255)
    return x, torch.from_numpy(labels)


def read_norb_matrix(path: str | Path) -> np.ndarray:
    """Read a LeCun binary-matrix file (optionally .gz) into a read-only NumPy array."""
    path = Path(path)
    try:
        with (gzip.open if path.name.lower().endswith(".gz") else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"Cannot read {path} ({err}). Delete it and download it again.") from err
    redownload = f"Delete it and download it again from {NORB_URL}."
    if len(raw) < 20:
        raise DataError(f"{path} is truncated ({len(raw)} bytes, no full header). {redownload}")
    magic, ndim = struct.unpack_from("<Ii", raw)
    dtype = NORB_MAGIC_DTYPES.get(magic)
    if dtype is None:
        raise DataError(f"{path} is not a NORB binary matrix (magic 0x{magic:08X}). {redownload}")
    if not 1 <= ndim <= 10:
        raise DataError(f"{path} declares {ndim} dimensions (expected 1 to 10). {redownload}")
    header = 8 + 4 * max(3, ndim)  # at least 3 dims are stored; those past ndim are ignored
    if len(raw) < header:
        raise DataError(f"{path} is truncated ({len(raw)} bytes, no full header). {redownload}")
    dims = struct.unpack_from(f"<{ndim}i", raw, 8)
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if min(dims) <= 0 or len(raw) != expected:
        raise DataError(
            f"{path} has {len(raw)} bytes, but its header (shape {dims}, {dtype}) "
            f"needs {expected}: the file is truncated or corrupt. {redownload}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def write_norb_matrix(path: str | Path, array: np.ndarray) -> None:
    """Write an array as a LeCun binary-matrix file (gzipped for .gz); used to build test files."""
    array = np.asarray(array)
    magic = _DTYPE_MAGIC.get(array.dtype.newbyteorder("<"))
    if magic is None or not 1 <= array.ndim <= 10:
        raise ValueError(f"cannot write a {array.ndim}-d {array.dtype} array as a NORB matrix")
    dims = list(array.shape) + [1] * (3 - array.ndim)
    header = struct.pack(f"<ii{len(dims)}i", magic, array.ndim, *dims)
    data = np.ascontiguousarray(array, dtype=NORB_MAGIC_DTYPES[magic]).tobytes()
    with (gzip.open if str(path).lower().endswith(".gz") else open)(path, "wb") as f:
        f.write(header + data)


def _find_file(folder: Path, name: str) -> Path | None:
    """Return folder/name matched case-insensitively, preferring it over name + '.gz'."""
    if not folder.is_dir():
        return None
    wanted = {name.lower(), name.lower() + ".gz"}
    found = sorted(p for p in folder.iterdir() if p.name.lower() in wanted)
    return found[0] if found else None


def load_norb(
    root: str | Path, split: str, size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load small NORB (first camera) as N×size² float32 images in [0, 1] and int64 labels 0-4."""
    if split not in NORB_PREFIXES:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    if size < 1:
        raise ValueError(f"size must be positive, not {size}")
    folder = Path(root) / "NORB"
    names = [f"{NORB_PREFIXES[split]}-{kind}.mat" for kind in ("dat", "cat")]
    dat_path, cat_path = (_find_file(folder, name) for name in names)
    if dat_path is None or cat_path is None:
        raise DataError(
            f"small NORB {split} files not found in {folder}. Download {names[0]} and "
            f"{names[1]} (.gz or unzipped) from {NORB_URL} and put them in that folder."
        )
    dat, cat = read_norb_matrix(dat_path), read_norb_matrix(cat_path)
    if dat.dtype != np.uint8 or dat.ndim != 4:
        raise DataError(f"{dat_path} should hold N×2×96×96 bytes, not {dat.shape} {dat.dtype}.")
    if cat.dtype != np.int32 or cat.ndim != 1:
        raise DataError(f"{cat_path} should hold N int32 labels, not {cat.shape} {cat.dtype}.")
    if len(cat) != len(dat) or len(dat) == 0:
        raise DataError(
            f"{cat_path.name} has {len(cat)} labels and {dat_path.name} has {len(dat)} images; "
            f"download both again from {NORB_URL}."
        )
    if cat.size and (cat.min() < 0 or cat.max() > 4):
        raise DataError(f"{cat_path} has labels outside 0-4. Download it again from {NORB_URL}.")
    first_camera = torch.from_numpy(dat[:, 0].copy())
    small = [  # in chunks, to bound the memory of the float copy
        F.interpolate(chunk.unsqueeze(1).float(), size=(size, size), mode="area")
        for chunk in first_camera.split(4096)
    ]
    x = torch.cat(small).reshape(len(dat), size * size).div_(255)
    return x, torch.from_numpy(cat.astype(np.int64))
