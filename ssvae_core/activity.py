"""What each unit of the style latent z does: its activity (mean KL of q(z|x,y) per unit), order, traversals.

A unit whose posterior q(z_j|x,y) equals the prior N(0, 1) for every x carries no information about x (KL ≈ 0,
"inactive" or collapsed); the decoder learns to ignore it, so moving its slider changes nothing. No Streamlit.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ssvae_core.generate import decode, one_thread, onehot, qy, sample_inputs, z_dim
from ssvae_core.images import tile

ACTIVE_KL = 0.02  # nats: a unit whose mean KL(q(z_j|x,y) ‖ N(0, 1)) is below this is called inactive
TRAVERSE = (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)  # values of one unit in a traversal (prior standard deviations)


@torch.no_grad()
def kl_per_unit(model: nn.Module, x, y=None, batch: int = 500) -> np.ndarray:
    """Mean over the inputs of KL(q(z_j|x,y) ‖ N(0, 1)) for each unit j of z; y = argmax q(y|x) when not given."""
    xs = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    ys = qy(model, xs).argmax(-1) if y is None else np.asarray(y).reshape(-1)
    if len(ys) != len(xs):
        raise ValueError(f"got {len(xs)} inputs but {len(ys)} classes")
    dev, total = next(model.parameters()).device, torch.zeros(z_dim(model), dtype=torch.float64)
    was_training = model.training
    model.eval()
    with one_thread():
        for i in range(0, len(xs), batch):
            xb = torch.as_tensor(xs[i:i + batch], device=dev)
            mu, logvar = model.posterior_z(xb, onehot(ys[i:i + batch], model.num_classes, device=dev))
            kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)
            total += kl.sum(0).double().cpu()
    model.train(was_training)
    return (total / max(1, len(xs))).numpy()


def measure(model: nn.Module, x_val=None, n: int = 2000) -> tuple[np.ndarray, str]:
    """(activity per unit, what it was measured on): mean KL of q(z_j|x,y) with y = argmax q(y|x) over the first
    `n` validation images, or over `n` of the model's own samples when no validation images are given."""
    if x_val is not None and len(x_val):
        x = np.asarray(x_val[:n], dtype=np.float32)
        return kl_per_unit(model, x), f"{len(x):,} validation images"
    x, _ = sample_inputs(model, n, seed=0)
    return kl_per_unit(model, x), f"{n:,} of the model's own samples (the dataset is not on this machine)"


def unit_order(activity: np.ndarray) -> np.ndarray:
    """Unit indices from the most to the least active (ties keep index order)."""
    return np.argsort(-np.asarray(activity), kind="stable")


def active_units(activity: np.ndarray, threshold: float = ACTIVE_KL) -> np.ndarray:
    """Indices of the units whose activity reaches `threshold`, most active first."""
    order = unit_order(activity)
    return order[np.asarray(activity)[order] >= threshold]


def with_unit(z, unit: int, values) -> np.ndarray:
    """Copies of the style z (one row per value) with unit `unit` set to each of `values`."""
    zs = np.repeat(np.asarray(z, dtype=np.float32).reshape(1, -1), len(values), axis=0)
    zs[:, unit] = np.asarray(values, dtype=np.float32)
    return zs


def pixel_change(model: nn.Module, unit: int, y: int, z=None, extent: float = 3.0) -> float:
    """Mean absolute change of p(x|y,z)'s mean pixels when unit `unit` of z goes from -extent to +extent."""
    base = np.zeros(z_dim(model), np.float32) if z is None else np.asarray(z, dtype=np.float32)
    lo, hi = decode(model, with_unit(base, unit, [-extent, extent]), [y, y])
    return float(np.abs(hi - lo).mean())


def traversal(model: nn.Module, unit: int, z=None, values=TRAVERSE, classes=None, pad: int = 1) -> np.ndarray:
    """Grid of p(x|y,z)'s means: row per class y, column per value of unit `unit` (the other units kept at z)."""
    base = np.zeros(z_dim(model), np.float32) if z is None else np.asarray(z, dtype=np.float32)
    ys = list(range(model.num_classes)) if classes is None else list(classes)
    zs = with_unit(base, unit, values)
    imgs = decode(model, np.tile(zs, (len(ys), 1)), np.repeat(ys, len(values)))
    return tile(imgs, len(ys), len(values), pad)

