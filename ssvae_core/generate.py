"""Generation and image I/O for the app: decode z, class grids, analogies, q(y|x), uploads, PNGs; no Streamlit.

Images come back as float arrays in [0, 1]: H×W for grey models, H×W×C for colour ones.
Models are M2 or M1+M2 (anything with `classify`, `encode_z`, `decode_x` and `num_classes`).
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import nn

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_UPLOAD_SIDE = 4096
CLASS_NAMES = {"norb": ["animal", "human", "airplane", "truck", "car"]}


# ---- model introspection ---------------------------------------------------------------------

def _m2_part(model: nn.Module) -> nn.Module:
    """The M2 inside a model (the model itself, or M1+M2's `m2`)."""
    return model.m2 if hasattr(model, "m2") else model


def z_dim(model: nn.Module) -> int:
    """Size of the style latent z (z2 of M1+M2) that `decode_x` takes."""
    m2 = _m2_part(model)
    return m2.decoder[0].in_features - m2.num_classes


def x_dim(model: nn.Module) -> int:
    """Number of pixel values (C·H·W) the model reads and writes."""
    if hasattr(model, "m1"):
        return model.m1.encoder.net[0].in_features
    return model.classifier[0].in_features


def model_image_shape(model: nn.Module, shape: tuple[int, ...] | list[int] | None = None) -> tuple[int, int, int]:
    """(C, H, W): `shape`, else the model's `image_shape` attribute, else a square grey/RGB guess from x_dim."""
    if shape is None:
        shape = getattr(model, "image_shape", None)
    if shape is not None:
        c, h, w = (int(v) for v in shape)
        return c, h, w
    d = x_dim(model)
    for c in (1, 3):
        side = math.isqrt(d // c)
        if d % c == 0 and side * side * c == d:
            return c, side, side
    raise ValueError(f"Cannot guess the image shape of a model with {d} pixel values; pass image_shape.")


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block's CPU ops on one thread: small decodes are fastest that way, and a busy OpenMP pool
    (e.g. beside a training run in the same process) otherwise stalls them by 10-100×."""
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


def to_images(x: torch.Tensor | np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """N×D pixel rows (C·H·W order) as N×H×W (grey) or N×H×W×C (colour) floats clipped to [0, 1]."""
    arr = x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
    c, h, w = shape
    arr = np.clip(arr.reshape(-1, c, h, w), 0.0, 1.0)
    return arr[:, 0] if c == 1 else arr.transpose(0, 2, 3, 1)


# ---- generation ------------------------------------------------------------------------------

@torch.no_grad()
def decode(model: nn.Module, z, y, image_shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """Mean images of p(x|y,z) for n rows of z and class(es) y: n×H×W (or n×H×W×C) in [0, 1]."""
    dev = _device(model)
    z = torch.as_tensor(np.asarray(z, dtype=np.float32), device=dev).reshape(-1, z_dim(model))
    yo = onehot(y, model.num_classes, len(z), dev)
    if len(yo) != len(z):
        raise ValueError(f"got {len(z)} z rows but {len(yo)} classes")
    was_training = model.training
    model.eval()
    with one_thread():
        out = model.decode_x(z, yo)
    model.train(was_training)
    return to_images(out, model_image_shape(model, image_shape))


def tile(images: np.ndarray, rows: int, cols: int, pad: int = 1, value: float = 1.0) -> np.ndarray:
    """rows×cols images (row-major, N×H×W[×C]) as one array with `pad` pixels of `value` between tiles."""
    n, h, w = images.shape[:3]
    if n != rows * cols:
        raise ValueError(f"{n} images do not fill a {rows}×{cols} grid")
    extra = images.shape[3:]
    out = np.full((rows * h + (rows - 1) * pad, cols * w + (cols - 1) * pad, *extra), value, dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = images[i]
    return out


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


# ---- PNG output ------------------------------------------------------------------------------

def to_uint8(img: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] as uint8 (values outside are clipped)."""
    return (np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def to_png_bytes(img: np.ndarray, scale: int = 1) -> bytes:
    """PNG bytes of an H×W or H×W×3 image in [0, 1], upscaled `scale`× with nearest neighbour (crisp pixels)."""
    arr = to_uint8(img)
    if scale > 1:
        arr = np.repeat(np.repeat(arr, scale, axis=0), scale, axis=1)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=False, compress_level=1)
    return buf.getvalue()


# ---- uploads and drawings --------------------------------------------------------------------

def _open_checked(data: bytes) -> Image.Image:
    """A fully decoded still PIL image from untrusted bytes, or a ValueError saying what is wrong."""
    if not data:
        raise ValueError("The file is empty (0 bytes). Upload a PNG or JPEG image of a digit.")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ValueError(f"The file is too large ({len(data) / 1e6:.1f} MB); the limit is "
                         f"{MAX_UPLOAD_BYTES // (1024 * 1024)} MB.")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            probe = Image.open(io.BytesIO(data))
            probe.verify()  # structure check without decoding pixels
        except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            if isinstance(exc, UnidentifiedImageError):
                raise ValueError("This file is not an image PIL can read. Upload a PNG, JPEG, BMP or GIF.") from None
            raise ValueError("The image is too large (decompression bomb protection).") from None
        except Exception as exc:  # truncated or corrupt files raise assorted errors
            raise ValueError(f"The image file is damaged and cannot be read ({type(exc).__name__}).") from None
        w, h = probe.size
        if w > MAX_UPLOAD_SIDE or h > MAX_UPLOAD_SIDE:
            raise ValueError(f"The image is too large ({w}×{h} pixels); at most {MAX_UPLOAD_SIDE} pixels per side.")
        if w < 1 or h < 1:
            raise ValueError("The image has no pixels.")
        img = Image.open(io.BytesIO(data))
        frames = getattr(img, "n_frames", 1)
        if frames > 1:
            raise ValueError(f"The image is animated ({frames} frames). Upload a still image.")
        try:
            img.load()
        except Exception as exc:
            raise ValueError(f"The image file is damaged and cannot be decoded ({type(exc).__name__}).") from None
    return img


def _to_float(img: Image.Image, colour: bool) -> np.ndarray:
    """Pixels as floats in [0, 1]: H×W grey or H×W×3 colour; alpha composited on a contrasting background."""
    img = ImageOps.exif_transpose(img) or img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if img.mode == "F" and arr.max() <= 1.0:
            top = 1.0
        grey = np.clip(arr / top, 0.0, 1.0)
        return np.repeat(grey[..., None], 3, -1) if colour else grey
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("1", "L"):
        img = img.convert("L")
    elif img.mode not in ("LA", "RGBA", "RGB"):
        img = img.convert("RGB")
    if img.mode in ("LA", "RGBA"):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float64) / 255.0
        alpha = rgba[..., 3:4]
        rgb = rgba[..., :3]
        lum = rgb.mean(-1, keepdims=True)
        if alpha.sum() > 0 and (alpha < 0.99).any():
            ink = float((lum * alpha).sum() / alpha.sum())  # mean brightness of what is drawn
            bg = 0.0 if ink > 0.5 else 1.0  # light strokes go on black, dark strokes on white
        else:
            bg = 1.0
        rgb = rgb * alpha + bg * (1.0 - alpha)
        return rgb if colour else rgb.mean(-1)
    arr = np.asarray(img.convert("RGB") if colour else img.convert("L"), dtype=np.float64) / 255.0
    return arr


def _resize(arr: np.ndarray, h: int, w: int) -> np.ndarray:
    """Antialiased resize of a [0, 1] float image to h×w."""
    mode = "RGB" if arr.ndim == 3 else "L"
    im = Image.fromarray(to_uint8(arr), mode=mode).resize((w, h), Image.Resampling.LANCZOS)
    return np.asarray(im, dtype=np.float32) / 255.0


def _digit_like(grey: np.ndarray, h: int, w: int) -> np.ndarray:
    """MNIST-style normalisation of a grey drawing: white ink on black, cropped, boxed, centred by mass."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    if np.median(border) > 0.5:  # light background: MNIST is a white digit on black
        grey = 1.0 - grey
    lo, hi = float(np.percentile(grey, 1)), float(grey.max())
    if hi - lo < 0.1:
        raise ValueError("The image looks blank: no strokes found. Draw or upload a digit with some contrast.")
    ink = np.clip((grey - lo) / (hi - lo), 0.0, 1.0)
    ink[ink < 0.1] = 0.0  # drop paper texture / JPEG noise
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    ink = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    side = max(ink.shape)
    square = np.zeros((side, side), dtype=np.float64)
    top, left = (side - ink.shape[0]) // 2, (side - ink.shape[1]) // 2
    square[top:top + ink.shape[0], left:left + ink.shape[1]] = ink
    if (h, w) != (28, 28):
        return _resize(square, h, w)
    box = _resize(square, 20, 20)  # MNIST: the digit fits a 20×20 box ...
    out = np.zeros((28, 28), dtype=np.float32)
    mass = box.sum()
    cy, cx = ((np.arange(20)[:, None] * box).sum() / mass, (np.arange(20)[None, :] * box).sum() / mass)
    oy = int(np.clip(round(13.5 - cy), 0, 8))  # ... placed so its centre of mass is at the image centre
    ox = int(np.clip(round(13.5 - cx), 0, 8))
    out[oy:oy + 20, ox:ox + 20] = box
    return np.clip(out, 0.0, 1.0)


def _prepare(arr: np.ndarray, image_shape, digit_style: bool | None) -> np.ndarray:
    """A [0, 1] image (H×W or H×W×3) as a model-ready row of C·H·W values."""
    c, h, w = (int(v) for v in image_shape)
    if digit_style is None:
        digit_style = c == 1 and (h, w) in ((28, 28), (8, 8))
    if c == 1:
        grey = arr.mean(-1) if arr.ndim == 3 else arr
        img = _digit_like(grey, h, w) if digit_style else _resize(_centre_square(grey), h, w)
        return img.reshape(-1).astype(np.float32)
    rgb = arr if arr.ndim == 3 else np.repeat(arr[..., None], 3, -1)
    img = _resize(_centre_square(rgb), h, w)[..., :c]
    return img.transpose(2, 0, 1).reshape(-1).astype(np.float32)


def _centre_square(arr: np.ndarray) -> np.ndarray:
    """The largest centred square crop."""
    h, w = arr.shape[:2]
    s = min(h, w)
    return arr[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]


def preprocess_upload(data: bytes, image_shape, digit_style: bool | None = None) -> np.ndarray:
    """An uploaded image file as a model-ready row in [0, 1] (C·H·W); ValueError with a user message if unusable.

    Grey digit models (28×28, 8×8) get MNIST's treatment: light backgrounds inverted, cropped to the
    ink, padded square, fitted in a 20×20 box centred by mass in 28×28 (or resized to H×W).
    """
    img = _open_checked(data)
    arr = _to_float(img, colour=int(image_shape[0]) == 3)
    return _prepare(arr, image_shape, digit_style)


def preprocess_canvas(rgba: np.ndarray, image_shape, digit_style: bool | None = None) -> np.ndarray:
    """A drawing-canvas H×W×4 RGBA array (uint8 or float) as a model-ready row; ValueError if blank."""
    arr = np.asarray(rgba)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an H×W×4 canvas, got shape {arr.shape}")
    arr = arr.astype(np.float64)
    if arr.max() > 1.0:
        arr = arr / 255.0
    if arr.shape[2] == 4:
        alpha = arr[..., 3:4]
        if alpha.max() <= 0:
            raise ValueError("The canvas is empty: draw a digit first.")
        bg = 0.0 if float((arr[..., :3].mean(-1, keepdims=True) * alpha).sum() / alpha.sum()) > 0.5 else 1.0
        arr = arr[..., :3] * alpha + bg * (1.0 - alpha)
    else:
        arr = arr[..., :3]
    if int(image_shape[0]) == 1:
        arr = arr.mean(-1)
    return _prepare(arr, image_shape, digit_style)
