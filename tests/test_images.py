"""Tests for ssvae_core.images: PNG output, tiling, and upload / canvas sanitising."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from ssvae_core import images

MNIST = (1, 28, 28)


def png(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    """Encode a PIL image."""
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def digit_one(size: int = 200, bg: int = 255, ink: int = 0, mode: str = "L") -> Image.Image:
    """A thick vertical stroke with a flag, drawn off-centre, like a photographed '1'."""
    img = Image.new(mode, (size, size), bg)
    d = ImageDraw.Draw(img)
    d.line([(150, 30), (150, 170)], fill=ink, width=18)
    d.line([(150, 30), (120, 60)], fill=ink, width=14)
    return img


# ---- PNGs and grids ---------------------------------------------------------------------------

def test_png_is_crisp_nearest_upscale():
    img = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    out = np.asarray(Image.open(io.BytesIO(images.to_png_bytes(img, 10))))
    assert out.shape == (20, 20)
    assert set(np.unique(out).tolist()) == {0, 255}  # no smoothing
    assert out[0, 9] == 0 and out[0, 10] == 255


# ---- uploads ---------------------------------------------------------------------------------

def _check_mnist_like(v: np.ndarray) -> None:
    """White digit on black, inside the central 20×20 box, centred by mass."""
    assert v.shape == (784,) and v.dtype == np.float32
    img = v.reshape(28, 28)
    assert img.min() >= 0 and img.max() <= 1 and img.max() > 0.9
    assert img[0].max() < 0.05 and img[:, 0].max() < 0.05  # black background
    ys, xs = np.nonzero(img > 0.05)
    assert ys.min() >= 3 and ys.max() <= 24 and xs.min() >= 3 and xs.max() <= 24
    cy = (np.arange(28)[:, None] * img).sum() / img.sum()
    cx = (np.arange(28)[None, :] * img).sum() / img.sum()
    assert abs(cy - 13.5) < 1.0 and abs(cx - 13.5) < 1.0


def test_black_on_white_photo_becomes_centred_white_on_black():
    _check_mnist_like(images.preprocess_upload(png(digit_one()), MNIST))


def test_jpeg_rgb_upload():
    _check_mnist_like(images.preprocess_upload(png(digit_one(mode="RGB", bg=(250, 250, 240), ink=(10, 10, 60)),
                                                     "JPEG"), MNIST))


@pytest.mark.parametrize("ink", [(0, 0, 0, 255), (255, 255, 255, 255)])
def test_rgba_on_transparent_background(ink):
    img = Image.new("RGBA", (120, 120), (0, 0, 0, 0))
    ImageDraw.Draw(img).ellipse([30, 20, 90, 100], outline=ink, width=12)
    _check_mnist_like(images.preprocess_upload(png(img), MNIST))


def test_16_bit_greyscale():
    arr = np.full((100, 100), 65535, dtype=np.uint16)
    arr[20:80, 45:55] = 0  # dark bar on white, 16-bit
    img = Image.fromarray(arr)
    assert img.mode.startswith("I;16")
    _check_mnist_like(images.preprocess_upload(png(img), MNIST))
    img32 = Image.fromarray(arr.astype(np.int32))  # mode "I"
    _check_mnist_like(images.preprocess_upload(png(img32, "TIFF"), MNIST))


def test_palette_gif_still_image():
    _check_mnist_like(images.preprocess_upload(png(digit_one().convert("P"), "GIF"), MNIST))


def test_other_shapes():
    v8 = images.preprocess_upload(png(digit_one()), (1, 8, 8))
    assert v8.shape == (64,) and v8.max() > 0.5
    rgb = images.preprocess_upload(png(Image.new("RGB", (50, 40), (200, 10, 10))), (3, 32, 32))
    assert rgb.shape == (3 * 32 * 32,)
    assert np.allclose(rgb[:1024], 200 / 255, atol=0.02) and rgb[1024:].max() < 0.1  # C×H×W order


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"this is not an image at all", "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not an image|damaged"),
])
def test_bad_bytes_are_rejected_clearly(data, message):
    with pytest.raises(ValueError, match=message):
        images.preprocess_upload(data, MNIST)


def test_truncated_png_is_rejected():
    data = png(digit_one())
    with pytest.raises(ValueError, match="damaged|not an image"):
        images.preprocess_upload(data[: len(data) // 2], MNIST)


def test_animated_gif_is_rejected():
    frames = [digit_one(), digit_one(bg=0, ink=255)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    with pytest.raises(ValueError, match="animated"):
        images.preprocess_upload(buf.getvalue(), MNIST)


def test_huge_dimensions_are_rejected_before_decoding():
    data = png(Image.new("1", (5000, 20), 1))  # tiny file, huge side
    assert len(data) < 100_000
    with pytest.raises(ValueError, match="too large"):
        images.preprocess_upload(data, MNIST)


def test_huge_file_is_rejected():
    with pytest.raises(ValueError, match="too large"):
        images.preprocess_upload(b"\x89PNG" + b"\x00" * (images.MAX_UPLOAD_BYTES + 1), MNIST)


def test_blank_image_is_rejected():
    with pytest.raises(ValueError, match="blank"):
        images.preprocess_upload(png(Image.new("L", (64, 64), 255)), MNIST)


def test_canvas():
    rgba = np.zeros((280, 280, 4), dtype=np.uint8)
    rgba[60:220, 130:150] = (255, 255, 255, 255)  # a white stroke on the transparent layer
    _check_mnist_like(images.preprocess_canvas(rgba, MNIST))
    with pytest.raises(ValueError, match="empty"):
        images.preprocess_canvas(np.zeros((280, 280, 4), dtype=np.uint8), MNIST)


def gradient_photo(size: int = 1000, seed: int = 0) -> Image.Image:
    """A photographed '7': dark ink off-centre on paper lit unevenly (a gradient from 110 to 245 grey across the
    sheet, a little warm and noisy), as an RGB JPEG would give."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    paper = 110 + 135 * (0.6 * xx + 0.4 * yy)
    rgb = np.stack([paper, paper * 0.97, paper * 0.9], -1)
    rgb += np.random.default_rng(seed).normal(0, 3, rgb.shape)
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    d.line([(180, 200), (520, 200), (330, 640)], fill=(40, 40, 50), width=45, joint="curve")  # in the darker corner
    return img


def test_photo_on_a_gradient_comes_out_centred_like_mnist():
    photo = gradient_photo()
    assert photo.size == (1000, 1000)
    v = images.preprocess_upload(png(photo, "JPEG", quality=90), MNIST)
    img = v.reshape(28, 28)
    assert v.shape == (784,) and img.max() > 0.9
    assert img[0].max() < 0.05 and img[:, 0].max() < 0.05 and img[:, -1].max() < 0.05  # black paper
    ys, xs = np.nonzero(img > 0.05)
    assert 18 <= max(ys.max() - ys.min(), xs.max() - xs.min()) + 1 <= 21  # the digit fills the 20×20 box
    cy = (np.arange(28)[:, None] * img).sum() / img.sum()
    cx = (np.arange(28)[None, :] * img).sum() / img.sum()
    assert abs(cy - 13.5) < 1.0 and abs(cx - 13.5) < 1.0  # centred by mass, as MNIST
    assert (img > 0.5).mean() < 0.25  # the paper is black, not a grey wash
    clean = Image.new("RGB", (1000, 1000), (255, 255, 255))  # the same '7' on evenly lit paper
    ImageDraw.Draw(clean).line([(180, 200), (520, 200), (330, 640)], fill=(40, 40, 50), width=45, joint="curve")
    ref = images.preprocess_upload(png(clean), MNIST)
    assert np.corrcoef(v, ref)[0, 1] > 0.9


def test_ink_map_removes_shading_and_keeps_evenly_lit_images():
    grey = np.zeros((40, 40))
    grey[10:30, 18:22] = 1.0
    assert images.ink_map(grey) is grey  # light ink on even black: as it is
    assert np.array_equal(images.ink_map(1.0 - grey), grey)  # dark ink on even white: inverted
    ramp = grey + np.linspace(0, 0.5, 40)[None, :]  # light ink, dark paper with a shading across it
    ink = images.ink_map(ramp)
    assert ink[:, :5].max() < 0.15 and ink[:, -5:].max() < 0.15 and ink[15, 20] > 0.6
    paper = np.linspace(0.5, 1.0, 40)[None, :].repeat(40, 0)  # dark ink, light paper lit from the right
    paper[10:30, 18:22] *= 0.2
    ink = images.ink_map(paper)
    assert ink[:, :5].max() < 0.15 and ink[:, -5:].max() < 0.15 and ink[15, 20] > 0.7
