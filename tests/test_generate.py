"""Tests for ssvae_core.generate: grid shapes, q(y|x), PNG output, and upload / canvas preprocessing."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from ssvae_core import generate
from ssvae_core.models import ModelConfig, build_model

MNIST = (1, 28, 28)


def tiny(kind: str = "m2", shape: tuple[int, int, int] = (1, 8, 8), z: int = 3, k: int = 10) -> torch.nn.Module:
    """An untrained small model with its image shape attached."""
    torch.manual_seed(0)
    cfg = ModelConfig(kind=kind, hidden=[16], z_dim=z, m1_hidden=[16], m1_z_dim=6)
    model = build_model(cfg, int(np.prod(shape)), k).eval()
    model.image_shape = shape
    return model


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


# ---- generation ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["m2", "m1m2"])
def test_decode_and_grids_have_k_columns(kind):
    model = tiny(kind)
    imgs = generate.decode(model, np.zeros((4, 3)), [0, 1, 2, 3])
    assert imgs.shape == (4, 8, 8) and imgs.min() >= 0 and imgs.max() <= 1
    assert generate.decode(model, np.zeros(3), 5).shape == (1, 8, 8)  # one z, one int class
    grid = generate.class_grid(model, np.random.default_rng(0).standard_normal((5, 3)))
    assert grid.shape == (5 * 9 - 1, 10 * 9 - 1)  # 5 style rows × K=10 class columns, 1-pixel gaps
    x = np.random.default_rng(1).random((3, 64)).astype(np.float32)
    a = generate.analogy_grid(model, x)
    assert a.shape == (3 * 9 - 1, 10 * 9 - 1)
    assert generate.analogy_grid(model, x, with_inputs=True).shape[1] > a.shape[1]
    p = generate.qy(model, x)
    assert p.shape == (3, 10) and np.allclose(p.sum(1), 1, atol=1e-5)


def test_analogy_row_keeps_inferred_style():
    model = tiny()
    x = np.random.default_rng(2).random((2, 64)).astype(np.float32)
    z, y = generate.infer_z(model, x)
    grid = generate.analogy_grid(model, x)
    first = generate.decode(model, z[:1], [3])[0]
    assert np.allclose(grid[:8, 3 * 9:3 * 9 + 8], first, atol=1e-6)
    assert y.shape == (2,)


def test_colour_model_gives_rgb_images():
    model = tiny(shape=(3, 4, 4), k=5)
    assert generate.model_image_shape(model) == (3, 4, 4)
    assert generate.decode(model, np.zeros((2, 3)), [0, 4]).shape == (2, 4, 4, 3)
    assert generate.class_grid(model, np.zeros((1, 3))).shape == (4, 5 * 5 - 1, 3)


def test_latent_map_needs_2d_z():
    model = tiny(z=2)
    grid, zs = generate.latent_map(model, 1, extent=2.0, n=5)
    assert grid.shape == (40, 40) and zs.shape == (25, 2)
    assert zs[0].tolist() == [-2.0, 2.0]  # top-left is (smallest z1, largest z2)
    with pytest.raises(ValueError):
        generate.latent_map(tiny(z=3), 0)


def test_shape_guess_and_sample_inputs():
    model = build_model(ModelConfig(kind="m2", hidden=[8], z_dim=2), 784, 10)
    assert generate.model_image_shape(model) == MNIST
    x, y = generate.sample_inputs(model, 4, seed=1)
    assert x.shape == (4, 784) and y.shape == (4,)


def test_png_is_crisp_nearest_upscale():
    img = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    out = np.asarray(Image.open(io.BytesIO(generate.to_png_bytes(img, 10))))
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
    _check_mnist_like(generate.preprocess_upload(png(digit_one()), MNIST))


def test_jpeg_rgb_upload():
    _check_mnist_like(generate.preprocess_upload(png(digit_one(mode="RGB", bg=(250, 250, 240), ink=(10, 10, 60)),
                                                     "JPEG"), MNIST))


@pytest.mark.parametrize("ink", [(0, 0, 0, 255), (255, 255, 255, 255)])
def test_rgba_on_transparent_background(ink):
    img = Image.new("RGBA", (120, 120), (0, 0, 0, 0))
    ImageDraw.Draw(img).ellipse([30, 20, 90, 100], outline=ink, width=12)
    _check_mnist_like(generate.preprocess_upload(png(img), MNIST))


def test_16_bit_greyscale():
    arr = np.full((100, 100), 65535, dtype=np.uint16)
    arr[20:80, 45:55] = 0  # dark bar on white, 16-bit
    img = Image.fromarray(arr)
    assert img.mode.startswith("I;16")
    _check_mnist_like(generate.preprocess_upload(png(img), MNIST))
    img32 = Image.fromarray(arr.astype(np.int32))  # mode "I"
    _check_mnist_like(generate.preprocess_upload(png(img32, "TIFF"), MNIST))


def test_palette_gif_still_image():
    _check_mnist_like(generate.preprocess_upload(png(digit_one().convert("P"), "GIF"), MNIST))


def test_other_shapes():
    v8 = generate.preprocess_upload(png(digit_one()), (1, 8, 8))
    assert v8.shape == (64,) and v8.max() > 0.5
    rgb = generate.preprocess_upload(png(Image.new("RGB", (50, 40), (200, 10, 10))), (3, 32, 32))
    assert rgb.shape == (3 * 32 * 32,)
    assert np.allclose(rgb[:1024], 200 / 255, atol=0.02) and rgb[1024:].max() < 0.1  # C×H×W order


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"this is not an image at all", "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not an image|damaged"),
])
def test_bad_bytes_are_rejected_clearly(data, message):
    with pytest.raises(ValueError, match=message):
        generate.preprocess_upload(data, MNIST)


def test_truncated_png_is_rejected():
    data = png(digit_one())
    with pytest.raises(ValueError, match="damaged|not an image"):
        generate.preprocess_upload(data[: len(data) // 2], MNIST)


def test_animated_gif_is_rejected():
    frames = [digit_one(), digit_one(bg=0, ink=255)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    with pytest.raises(ValueError, match="animated"):
        generate.preprocess_upload(buf.getvalue(), MNIST)


def test_huge_dimensions_are_rejected_before_decoding():
    data = png(Image.new("1", (5000, 20), 1))  # tiny file, huge side
    assert len(data) < 100_000
    with pytest.raises(ValueError, match="too large"):
        generate.preprocess_upload(data, MNIST)


def test_huge_file_is_rejected():
    with pytest.raises(ValueError, match="too large"):
        generate.preprocess_upload(b"\x89PNG" + b"\x00" * (generate.MAX_UPLOAD_BYTES + 1), MNIST)


def test_blank_image_is_rejected():
    with pytest.raises(ValueError, match="blank"):
        generate.preprocess_upload(png(Image.new("L", (64, 64), 255)), MNIST)


def test_canvas():
    rgba = np.zeros((280, 280, 4), dtype=np.uint8)
    rgba[60:220, 130:150] = (255, 255, 255, 255)  # a white stroke on the transparent layer
    _check_mnist_like(generate.preprocess_canvas(rgba, MNIST))
    with pytest.raises(ValueError, match="empty"):
        generate.preprocess_canvas(np.zeros((280, 280, 4), dtype=np.uint8), MNIST)
