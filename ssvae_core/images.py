"""Image input and output for the app: upload and drawing sanitising, pixel rows as images, tiling, PNG bytes.

Images are float arrays in [0, 1]: H×W for grey, H×W×C for colour; a model's pixel row is C·H·W values.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_UPLOAD_SIDE = 4096


# ---- pixel rows, grids and PNGs --------------------------------------------------------------

def to_images(x: torch.Tensor | np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """N×D pixel rows (C·H·W order) as N×H×W (grey) or N×H×W×C (colour) floats clipped to [0, 1]."""
    arr = x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
    c, h, w = shape
    arr = np.clip(arr.reshape(-1, c, h, w), 0.0, 1.0)
    return arr[:, 0] if c == 1 else arr.transpose(0, 2, 3, 1)


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


WORK_SIDE = 512  # photos are shrunk to at most this many pixels per side before cleaning (the result is 28×28)
EVEN_LIGHT = 0.08  # border brightness spread (5th to 95th percentile) under which the paper counts as evenly lit


def _border(grey: np.ndarray) -> np.ndarray:
    """The outermost pixels of an image."""
    return np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])


def ink_map(grey: np.ndarray) -> np.ndarray:
    """How much ink each pixel holds, in [0, 1] on black, for dark ink on light paper or light ink on dark paper;
    uneven light (a shading across the sheet, a shadow) is divided out (light paper) or subtracted (dark paper).

    The paper is estimated with a window a fifth of the image, wider than any stroke: a grey closing (maximum then
    minimum filter) of light paper, an opening of dark paper, so that the strokes vanish from it; what remains of the
    paper at the border (its grain, noise) is taken as zero ink. Evenly lit images are only inverted where needed.
    """
    light = bool(np.median(_border(grey)) > 0.5)  # MNIST is a white digit on black
    border = _border(grey)
    if np.percentile(border, 95) - np.percentile(border, 5) < EVEN_LIGHT:
        return 1.0 - grey if light else grey
    from scipy import ndimage  # scipy comes with scikit-learn; loaded only for photos that need it

    h, w = grey.shape
    scale = 64 / max(h, w)
    small = _resize(grey, max(8, round(h * scale)), max(8, round(w * scale))).astype(np.float64)
    win = (max(3, max(small.shape) // 5),) * 2
    paper = ndimage.grey_closing(small, size=win) if light else ndimage.grey_opening(small, size=win)
    paper = _resize(ndimage.uniform_filter(paper, size=win, mode="nearest"), h, w).astype(np.float64)
    ink = 1.0 - grey / np.maximum(paper, 1e-3) if light else grey - paper
    floor = min(0.5, float(np.percentile(_border(ink), 99)))  # what is left of the paper: its grain and noise
    return np.clip((ink - floor) / (1.0 - floor), 0.0, 1.0)


def _digit_like(grey: np.ndarray, h: int, w: int) -> np.ndarray:
    """MNIST-style normalisation of a grey drawing or photo: white ink on black, the paper's shading removed,
    cropped to the ink, boxed in 20×20 and centred by mass in 28×28."""
    if max(grey.shape) > WORK_SIDE:
        f = WORK_SIDE / max(grey.shape)
        grey = _resize(grey, max(1, round(grey.shape[0] * f)), max(1, round(grey.shape[1] * f))).astype(np.float64)
    grey = ink_map(grey)
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

    Grey digit models (28×28, 8×8) get MNIST's treatment: light backgrounds inverted, uneven lighting removed,
    cropped to the ink, padded square, fitted in a 20×20 box centred by mass in 28×28 (or resized to H×W).
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
