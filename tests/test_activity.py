"""Unit activity: which z units carry information (mean KL of q(z_j|x,y)), their order, and what moving them does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssvae_core import activity
from ssvae_core.models import M2, ModelConfig
from tests.conftest import ROOT

VISIBLE = 0.02  # mean pixel change from -3 to +3 that a user can see


def controlled_m2(active: tuple[int, ...], d: int = 6, x_dim: int = 64, k: int = 3) -> M2:
    """An M2 whose only informative z units are `active`: the others have q(z_j|x,y) = N(0, 1) for every x and
    no weight into the decoder."""
    torch.manual_seed(0)
    model = M2(x_dim, k, ModelConfig(kind="m2", hidden=[16], z_dim=d))
    inactive = [j for j in range(d) if j not in active]
    with torch.no_grad():
        last = model.encoder.net[-1]  # rows 0..d-1: mean, d..2d-1: log-variance
        for j in inactive:
            for row in (j, d + j):
                last.weight[row].zero_()
                last.bias[row] = 0.0
        for j in active:
            last.weight[j] *= 5.0  # means spread far from 0: a large KL
        first = model.decoder[0]
        first.weight[:, inactive] = 0.0
        first.weight[:, list(active)] *= 8.0
    return model


def test_kl_per_unit_finds_the_units_that_matter():
    model = controlled_m2(active=(4, 1))
    x = torch.rand(300, 64).numpy()
    kl = activity.kl_per_unit(model, x)
    assert kl.shape == (6,)
    assert np.allclose(kl[[0, 2, 3, 5]], 0.0, atol=1e-6)
    assert (kl[[1, 4]] > 0.1).all()
    assert set(activity.unit_order(kl)[:2]) == {1, 4}
    assert set(activity.active_units(kl)) == {1, 4}
    first = int(activity.unit_order(kl)[0])
    assert activity.pixel_change(model, first, 0) >= VISIBLE
    assert activity.pixel_change(model, 0, 0) == pytest.approx(0.0, abs=1e-7)  # an inactive unit moves nothing


def test_given_classes_and_measure_on_samples():
    model = controlled_m2(active=(2,))
    x = torch.rand(50, 64).numpy()
    kl_true = activity.kl_per_unit(model, x, y=np.zeros(50, int))
    assert int(activity.unit_order(kl_true)[0]) == 2
    with pytest.raises(ValueError):
        activity.kl_per_unit(model, x, y=[0, 1])
    kl, source = activity.measure(model, None, n=40)  # no dataset: the model's own samples
    assert int(activity.unit_order(kl)[0]) == 2 and "samples" in source
    kl, source = activity.measure(model, x, n=40)
    assert "40 validation images" in source


def test_traversal_grid_and_with_unit():
    model = controlled_m2(active=(3,))
    grid = activity.traversal(model, 3)
    h, w = 8, 8
    n = len(activity.TRAVERSE)
    assert grid.shape == (3 * h + 2, n * w + n - 1)  # a row per class, a column per value, 1-pixel gaps
    assert not np.allclose(grid[:h, :w], grid[:h, -w:])  # the unit changes the image along the row
    flat = activity.traversal(model, 0)
    assert np.allclose(flat[:h, :w], flat[:h, -w:])  # an inactive unit does not
    zs = activity.with_unit(np.ones(6), 2, [-1, 0, 1])
    assert zs.shape == (3, 6) and zs[:, 2].tolist() == [-1, 0, 1] and (zs[:, 0] == 1).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["m1m2-mnist-n100", "m2-mnist-n100", "m2-z2-mnist-n100"])
def test_first_slider_of_each_shipped_model_moves_the_image(mnist_root, name):
    """The Style explorer's first slider (the most active unit, measured as the page does) visibly changes the
    image for every class; units called inactive change it by less than that."""
    from ssvae_core.checkpoints import load_run
    from ssvae_core.data import load_mnist

    model = load_run(ROOT / "checkpoints" / "pretrained" / name).model
    data = load_mnist(mnist_root, download=False)
    kl, _ = activity.measure(model, data.x_val.numpy())
    order = activity.unit_order(kl)
    assert (np.diff(kl[order]) <= 0).all()
    first = int(order[0])
    changes = [activity.pixel_change(model, first, y) for y in range(10)]
    assert min(changes) >= VISIBLE, changes
    for j in order[len(activity.active_units(kl)):]:
        assert activity.pixel_change(model, int(j), 0) < VISIBLE
