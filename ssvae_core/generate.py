"""Generation from a trained model: decode z, class grids, analogies, latent maps, q(y|x); no Streamlit.

Images come back as float arrays in [0, 1]: H×W for grey models, H×W×C for colour ones.
Models are M2 or M1+M2 (anything with `classify`, `encode_z`, `decode_x`, `num_classes`, `x_dim`, `z_dim` and
`image_shape`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssvae_core.images import tile, to_images
from ssvae_core.images import to_png_bytes as to_png_bytes  # re-exported: pages/_ui.py and bench/latency.py use it

CLASS_NAMES = {"norb": ["animal", "human", "airplane", "truck", "car"]}


# ---- model sizes -----------------------------------------------------------------------------

def z_dim(model: nn.Module) -> int:
    """Size of the style latent z (z2 of M1+M2) that `decode_x` takes."""
    return model.z_dim


def x_dim(model: nn.Module) -> int:
    """Number of pixel values (C·H·W) the model reads and writes."""
    return model.x_dim


def model_image_shape(model: nn.Module, shape: tuple[int, ...] | list[int] | None = None) -> tuple[int, int, int]:
    """(C, H, W) of the model's images: `shape` if given, else the model's `image_shape`."""
    c, h, w = (int(v) for v in (model.image_shape if shape is None else shape))
    return c, h, w


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block's CPU ops on one thread (small decodes; a busy OpenMP pool beside them would stall them)."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _device(model: nn.Module) -> torch.device:
    """Device of the model's parameters."""
    return next(model.parameters()).device


def onehot(y: torch.Tensor | np.ndarray | list[int] | int, k: int, n: int | None = None,
           device: torch.device | str = "cpu") -> torch.Tensor:
    """One-hot float rows for class indices `y` (a single int is repeated `n` times)."""
    if isinstance(y, int | np.integer):
        y = [int(y)] * (n or 1)
    idx = torch.as_tensor(np.asarray(y), dtype=torch.long, device=device).reshape(-1)
    if len(idx) and (idx.min() < 0 or idx.max() >= k):
        raise ValueError(f"class indices must be in 0..{k - 1}")
    return F.one_hot(idx, k).float()


# ---- generation ------------------------------------------------------------------------------

@torch.no_grad()
def decode(model: nn.Module, z, y, image_shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """Mean images of p(x|y,z) for n rows of z and class(es) y: n×H×W (or n×H×W×C) in [0, 1]."""
    z = np.asarray(z, dtype=np.float32).reshape(-1, z_dim(model))
    return decode_mixed(model, z, onehot(y, model.num_classes, len(z)).numpy(), image_shape)


@torch.no_grad()
def decode_mixed(model: nn.Module, z, y_rows, image_shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """Mean images of p(x|y,z) with y given as rows of K weights (one-hot, or a mix of two classes on a path)."""
    dev = _device(model)
    z = torch.as_tensor(np.asarray(z, dtype=np.float32), device=dev).reshape(-1, z_dim(model))
    yo = torch.as_tensor(np.asarray(y_rows, dtype=np.float32), device=dev).reshape(-1, model.num_classes)
    if len(yo) != len(z):
        raise ValueError(f"got {len(z)} z rows but {len(yo)} classes")
    was_training = model.training
    model.eval()
    with one_thread():
        out = model.decode_x(z, yo)
    model.train(was_training)
    return to_images(out, model_image_shape(model, image_shape))


def class_grid(model: nn.Module, zs, image_shape: tuple[int, int, int] | None = None, pad: int = 1) -> np.ndarray:
    """The paper's conditional-generation grid: row i decodes style zs[i] with every class y (K columns)."""
    k = model.num_classes
    zs = np.asarray(zs, dtype=np.float32).reshape(-1, z_dim(model))
    z_rep = np.repeat(zs, k, axis=0)
    y_rep = np.tile(np.arange(k), len(zs))
    imgs = decode(model, z_rep, y_rep, image_shape)
    return tile(imgs, len(zs), k, pad)


@torch.no_grad()
def qy(model: nn.Module, x) -> np.ndarray:
    """Class probabilities q(y|x), one row per input (N×K)."""
    dev = _device(model)
    x = torch.as_tensor(np.asarray(x, dtype=np.float32), device=dev).reshape(-1, x_dim(model))
    was_training = model.training
    model.eval()
    with one_thread():
        p = torch.softmax(model.classify(x), -1)
    model.train(was_training)
    return p.cpu().numpy()


@torch.no_grad()
def infer_z(model: nn.Module, x) -> tuple[np.ndarray, np.ndarray]:
    """(z, y): y = argmax q(y|x) and z = mean of q(z|x,y), the style of each input."""
    dev = _device(model)
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32), device=dev).reshape(-1, x_dim(model))
    y = qy(model, xt).argmax(-1)
    was_training = model.training
    model.eval()
    with one_thread():
        z = model.encode_z(xt, onehot(y, model.num_classes, device=dev))
    model.train(was_training)
    return z.cpu().numpy(), y


def analogy_grid(model: nn.Module, x, image_shape: tuple[int, int, int] | None = None, pad: int = 1,
                 with_inputs: bool = False) -> np.ndarray:
    """Analogies: row i keeps the style z of input i (inferred with y = argmax q(y|x)) and decodes every class.

    The grid has K columns (one per class); `with_inputs` prepends the inputs as an extra column
    separated by a wider gap.
    """
    shape = model_image_shape(model, image_shape)
    z, _ = infer_z(model, x)
    grid = class_grid(model, z, shape, pad)
    if not with_inputs:
        return grid
    inputs = tile(to_images(np.asarray(x, dtype=np.float32), shape), len(z), 1, pad)
    gap = np.full((grid.shape[0], 3 * pad + 1, *grid.shape[2:]), 1.0, dtype=np.float32)
    return np.concatenate([inputs, gap, grid], axis=1)


def interpolate_z(model: nn.Module, z_a, z_b, y: int, steps: int = 8,
                  image_shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """The straight path z(t) = (1 − t)·z_a + t·z_b, t = 0…1 in `steps` steps, decoded with class y (steps×H×W)."""
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
    zs = (1 - t) * np.asarray(z_a, np.float32).reshape(1, -1) + t * np.asarray(z_b, np.float32).reshape(1, -1)
    return decode(model, zs, np.full(steps, y), image_shape)


def interpolate_y(model: nn.Module, z, y_a: int, y_b: int, steps: int = 8,
                  image_shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """One style z decoded along the path from class y_a to y_b: y(t) = (1 − t)·onehot(y_a) + t·onehot(y_b)."""
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
    eye = np.eye(model.num_classes, dtype=np.float32)
    ys = (1 - t) * eye[y_a] + t * eye[y_b]
    return decode_mixed(model, np.repeat(np.asarray(z, np.float32).reshape(1, -1), steps, 0), ys, image_shape)


def latent_map(model: nn.Module, y: int, extent: float = 3.0, n: int = 15,
               image_shape: tuple[int, int, int] | None = None, pad: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """For a 2-D z model: (image grid, n·n×2 z values) decoding z over [-extent, extent]² for class y.

    Row 0 of the grid is the largest z2 (top), column 0 the smallest z1 (left), as on a plot.
    """
    if z_dim(model) != 2:
        raise ValueError(f"latent_map needs a model with a 2-D z, this one has {z_dim(model)}")
    ticks = np.linspace(-extent, extent, n, dtype=np.float32)
    zs = np.array([(a, b) for b in ticks[::-1] for a in ticks], dtype=np.float32)
    imgs = decode(model, zs, np.full(len(zs), y), image_shape)
    return tile(imgs, n, n, pad), zs


@torch.no_grad()
def sample_inputs(model: nn.Module, n: int, seed: int = 0,
                  image_shape: tuple[int, int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(x rows N×D, y) drawn from the model itself: z ~ N(0, I), y uniform, x = mean of p(x|y,z)."""
    g = np.random.default_rng(seed)
    z = g.standard_normal((n, z_dim(model))).astype(np.float32)
    y = g.integers(0, model.num_classes, n)
    imgs = decode(model, z, y, image_shape)
    c = model_image_shape(model, image_shape)[0]
    rows = imgs.reshape(n, -1) if c == 1 else imgs.transpose(0, 3, 1, 2).reshape(n, -1)
    return rows.astype(np.float32), y
