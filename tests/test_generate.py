"""Tests for ssvae_core.generate: grid shapes, analogies, latent maps, q(y|x), model sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ssvae_core import generate
from ssvae_core.models import ModelConfig, build_model

MNIST = (1, 28, 28)


def tiny(kind: str = "m2", shape: tuple[int, int, int] = (1, 8, 8), z: int = 3, k: int = 10) -> torch.nn.Module:
    """An untrained small model for images of `shape`."""
    torch.manual_seed(0)
    cfg = ModelConfig(kind=kind, hidden=[16], z_dim=z, m1_hidden=[16], m1_z_dim=6)
    return build_model(cfg, int(np.prod(shape)), k, image_shape=shape).eval()


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


# ---- model sizes -----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["m1", "m2", "m1m2", "supervised"])
def test_models_expose_their_sizes_without_new_state(kind):
    cfg = ModelConfig(kind=kind, hidden=[16], z_dim=3, m1_hidden=[16], m1_z_dim=6)
    model = build_model(cfg, 48, 5, image_shape=(3, 4, 4))
    assert model.x_dim == 48 and model.image_shape == (3, 4, 4)
    assert build_model(cfg, 784, 10).image_shape == MNIST  # default: guessed from x_dim
    if kind != "supervised":
        assert model.z_dim == (6 if kind == "m1" else 3)
    keys = set(model.state_dict())
    assert not any(k.endswith(("x_dim", "z_dim", "image_shape")) for k in keys)


def test_generate_keeps_the_names_other_modules_use():
    from ssvae_core import images

    assert generate.tile is images.tile and generate.to_images is images.to_images
    assert generate.to_png_bytes is images.to_png_bytes
    assert callable(generate.z_dim) and callable(generate.class_grid)


def test_shipped_runs_load_with_their_sizes():
    """The size attributes add nothing to the state dict: every shipped checkpoint still loads, sizes as saved."""
    from ssvae_core.checkpoints import load_run

    shipped = sorted(Path(__file__).resolve().parents[1].glob("checkpoints/pretrained/*/model.pt"))
    assert shipped
    for path in shipped:
        run = load_run(path.parent, device="cpu")
        data, m = run.meta["data"], run.model
        assert m.x_dim == data["x_dim"] and m.image_shape == tuple(data["image_shape"])
        if run.cfg.model.kind == "m1":  # the shipped M1: its decoder takes z alone
            assert m.z_dim == m.decoder[0].in_features
            continue
        m2 = m.m2 if hasattr(m, "m2") else m
        assert generate.z_dim(m) == m2.decoder[0].in_features - data["num_classes"]


def test_interpolations_start_and_end_at_their_endpoints():
    import torch

    from ssvae_core.models import M2, ModelConfig

    torch.manual_seed(0)
    model = M2(64, 3, ModelConfig(kind="m2", hidden=[16], z_dim=4))
    za, zb = np.zeros(4, np.float32), np.full(4, 2.0, np.float32)
    path = generate.interpolate_z(model, za, zb, 1, steps=5)
    assert path.shape == (5, 8, 8)
    assert np.allclose(path[0], generate.decode(model, za[None], [1])[0])
    assert np.allclose(path[-1], generate.decode(model, zb[None], [1])[0])
    ys = generate.interpolate_y(model, zb, 0, 2, steps=4)
    assert np.allclose(ys[0], generate.decode(model, zb[None], [0])[0])
    assert np.allclose(ys[-1], generate.decode(model, zb[None], [2])[0])
    assert not np.allclose(ys[1], ys[0]) and not np.allclose(ys[1], ys[-1])  # a mix in between
