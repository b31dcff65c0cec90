"""Tests for the SVHN and small NORB file readers, on tiny files written in tmp_path."""

import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from ssvae_core import formats
from ssvae_core.errors import DataError
from ssvae_core.formats import load_norb, load_svhn, read_norb_matrix, write_norb_matrix

TRAIN_DAT = "smallnorb-5x46789x9x18x6x2x96x96-training-dat.mat"
TRAIN_CAT = "smallnorb-5x46789x9x18x6x2x96x96-training-cat.mat"
TEST_DAT = "smallnorb-5x01235x9x18x6x2x96x96-testing-dat.mat"
TEST_CAT = "smallnorb-5x01235x9x18x6x2x96x96-testing-cat.mat"
BYTE_MAGIC, INT_MAGIC = 0x1E3D4C55, 0x1E3D4C54


def dat_bytes(images: np.ndarray, magic: int = BYTE_MAGIC) -> bytes:
    """Build a NORB byte-matrix file by hand: magic, ndim=4, four dims, then the pixels."""
    return struct.pack("<6i", magic, 4, *images.shape) + images.astype(np.uint8).tobytes()


def cat_bytes(labels: np.ndarray) -> bytes:
    """Build a NORB integer-matrix file by hand: magic, ndim=1, three dims (two ignored), data."""
    return struct.pack("<5i", INT_MAGIC, 1, len(labels), 1, 1) + labels.astype("<i4").tobytes()


@pytest.fixture
def norb(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """Write 6 random stereo pairs and their labels as hand-built small NORB training files."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 2, 96, 96), dtype=np.uint8)
    labels = np.array([0, 1, 2, 3, 4, 2], dtype=np.int32)
    (tmp_path / "NORB").mkdir()
    (tmp_path / "NORB" / TRAIN_DAT).write_bytes(dat_bytes(images))
    (tmp_path / "NORB" / TRAIN_CAT).write_bytes(cat_bytes(labels))
    return tmp_path, images, labels


@pytest.mark.parametrize("size", [32, 48])
def test_load_norb_downsamples_first_camera(norb, size: int) -> None:
    root, images, labels = norb
    x, y = load_norb(root, "train", size=size)
    assert x.shape == (6, size * size) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.tolist() == labels.tolist()
    k = 96 // size  # "area" on an exact multiple is the mean of k×k blocks
    expected = images[:, 0].reshape(6, size, k, size, k).mean(axis=(2, 4)) / 255
    np.testing.assert_allclose(x.numpy(), expected.reshape(6, -1), atol=1e-6)


def test_norb_writer_matches_hand_built_bytes(tmp_path: Path) -> None:
    images = np.arange(3 * 2 * 96 * 96, dtype=np.int64).reshape(3, 2, 96, 96).astype(np.uint8)
    labels = np.array([4, 0, 3], dtype=np.int32)
    write_norb_matrix(tmp_path / "dat.mat", images)
    write_norb_matrix(tmp_path / "cat.mat", labels)
    assert (tmp_path / "dat.mat").read_bytes() == dat_bytes(images)
    assert (tmp_path / "cat.mat").read_bytes() == cat_bytes(labels)


def test_read_norb_matrix_round_trips_2d_and_gzip(tmp_path: Path) -> None:
    info = np.array([[1, -2, 3, 40000], [5, 6, 7, 8]], dtype=np.int32)
    write_norb_matrix(tmp_path / "info.mat.gz", info)
    back = read_norb_matrix(tmp_path / "info.mat.gz")
    assert back.dtype == np.int32 and back.shape == (2, 4)
    np.testing.assert_array_equal(back, info)


def test_load_norb_accepts_gz_and_any_case(tmp_path: Path) -> None:
    images = np.full((2, 2, 96, 96), 51, dtype=np.uint8)
    (tmp_path / "NORB").mkdir()
    write_norb_matrix(tmp_path / "NORB" / (TEST_DAT.upper() + ".gz"), images)
    write_norb_matrix(tmp_path / "NORB" / (TEST_CAT + ".GZ"), np.array([3, 1], dtype=np.int32))
    x, y = load_norb(tmp_path, "test", size=16)
    assert x.shape == (2, 256) and y.tolist() == [3, 1]
    assert torch.allclose(x, torch.full((2, 256), 0.2))


def test_truncated_norb_file_names_the_file(norb) -> None:
    root, images, _ = norb
    (root / "NORB" / TRAIN_DAT).write_bytes(dat_bytes(images)[:-100])
    with pytest.raises(DataError, match="training-dat.mat.*truncated"):
        load_norb(root, "train")


def test_norb_file_with_trailing_bytes(norb) -> None:
    root, _, labels = norb
    (root / "NORB" / TRAIN_CAT).write_bytes(cat_bytes(labels) + b"\0" * 4)
    with pytest.raises(DataError, match="training-cat.mat.*corrupt"):
        load_norb(root, "train")


def test_truncated_norb_header(tmp_path: Path) -> None:
    (tmp_path / "short.mat").write_bytes(struct.pack("<3i", BYTE_MAGIC, 4, 6))
    with pytest.raises(DataError, match="short.mat.*truncated"):
        read_norb_matrix(tmp_path / "short.mat")


def test_wrong_norb_magic(norb) -> None:
    root, images, _ = norb
    (root / "NORB" / TRAIN_DAT).write_bytes(dat_bytes(images, magic=0x08030000))
    with pytest.raises(DataError, match="training-dat.mat.*magic"):
        load_norb(root, "train")


def test_norb_label_count_mismatch(norb) -> None:
    root, _, labels = norb
    (root / "NORB" / TRAIN_CAT).write_bytes(cat_bytes(labels[:5]))
    with pytest.raises(DataError, match="5 labels.*6 images"):
        load_norb(root, "train")


def test_missing_norb_folder_lists_expected_files(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_norb(tmp_path, "test")
    message = str(info.value)
    assert TEST_DAT in message and TEST_CAT in message and formats.NORB_URL in message


def write_svhn(folder: Path, name: str, digits: list[int]) -> np.ndarray:
    """Save digits in SVHN's layout (X: 32×32×3×N uint8, y: N×1 with 0 stored as 10)."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 200, size=(32, 32, 3, len(digits)), dtype=np.uint8)
    images[5, 7, 2, 1] = 250  # row 5, column 7, blue channel of image 1
    y = np.array([d if d else 10 for d in digits], dtype=np.uint8).reshape(-1, 1)
    folder.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(folder / name, {"X": images, "y": y})
    return images


def test_load_svhn_layout_and_labels(tmp_path: Path) -> None:
    images = write_svhn(tmp_path / "SVHN", "test_32x32.mat", [0, 3, 9, 0])
    x, y = load_svhn(tmp_path, "test", download=False)
    assert x.shape == (4, 3072) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.tolist() == [0, 3, 9, 0]
    assert x[1, 2 * 1024 + 5 * 32 + 7].item() == pytest.approx(250 / 255)
    assert x[3, 1 * 1024 + 31 * 32 + 0].item() == pytest.approx(images[31, 0, 1, 3] / 255)
    assert 0.0 <= x.min().item() and x.max().item() <= 1.0


def test_missing_svhn_names_files(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(formats, "download_url", lambda *a: pytest.fail("download attempted"))
    with pytest.raises(DataError, match="train_32x32.mat.*test_32x32.mat") as info:
        load_svhn(tmp_path, "train", download=False)
    assert str(tmp_path / "SVHN") in str(info.value)


def test_failed_svhn_download_becomes_data_error(tmp_path: Path, monkeypatch) -> None:
    def offline(url: str, root: Path, filename: str, md5: str) -> None:
        (Path(root) / filename).write_bytes(b"partial")  # a half-written file
        raise urllib.error.URLError("no network")

    (tmp_path / "SVHN").mkdir()
    monkeypatch.setattr(formats, "download_url", offline)
    with pytest.raises(DataError, match="test_32x32.mat"):
        load_svhn(tmp_path, "test")
    assert not (tmp_path / "SVHN" / "test_32x32.mat").exists()


def test_svhn_download_is_used_when_file_missing(tmp_path: Path, monkeypatch) -> None:
    def fake_download(url: str, root: Path, filename: str, md5: str) -> None:
        assert url == formats.SVHN_URL + filename and filename == "train_32x32.mat"
        write_svhn(Path(root), filename, [7, 1])

    monkeypatch.setattr(formats, "download_url", fake_download)
    x, y = load_svhn(tmp_path, "train")
    assert x.shape == (2, 3072) and y.tolist() == [7, 1]


def test_malformed_svhn_file(tmp_path: Path) -> None:
    (tmp_path / "SVHN").mkdir()
    (tmp_path / "SVHN" / "train_32x32.mat").write_bytes(b"not a mat file" * 20)
    with pytest.raises(DataError, match="train_32x32.mat"):
        load_svhn(tmp_path, "train", download=False)
