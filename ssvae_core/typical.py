"""How typical an input is for a model: its evidence lower bound (ELBO) against those of the test images. No Streamlit.

A classifier answers every input with some class, noise included; the bound says whether the model could have
written the input at all. M2's bound on an unlabelled image is U(x) (paper eq. 7); M1+M2 models the pixels through
its M1, so its bound on the pixels is M1's ELBO(x) (paper eq. 1).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ssvae_core.generate import one_thread

FAR = 5.0  # an input whose ELBO is more than FAR robust standard deviations below the test images' median is atypical
REFERENCE = 1000  # test images whose ELBOs form the reference


@torch.no_grad()
def elbo(model: nn.Module, x, samples: int = 4, seed: int = 0, batch: int = 500) -> np.ndarray:
    """ELBO of each input in nats (higher: more like what the model was trained on), averaged over `samples`
    draws of z with a fixed seed: U(x) for M2, M1's ELBO(x) for M1+M2."""
    dev = next(model.parameters()).device
    xs = torch.as_tensor(np.asarray(x, dtype=np.float32), device=dev).reshape(len(x), -1)
    bound = model.m1.elbo if hasattr(model, "m1") else model.elbo_unlabelled
    was_training = model.training
    model.eval()
    out = torch.zeros(len(xs), dtype=torch.float64)
    with torch.random.fork_rng(devices=[]), one_thread():
        torch.manual_seed(seed)
        for _ in range(samples):
            out += torch.cat([bound(xs[i:i + batch])["elbo"].double().cpu() for i in range(0, len(xs), batch)])
    model.train(was_training)
    return (out / samples).numpy()


def percentile(values, reference) -> np.ndarray:
    """For each value, the percentage of `reference` values below it (0: lower than all of them)."""
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    return 100.0 * np.searchsorted(ref, np.asarray(values, dtype=np.float64), side="left") / max(1, len(ref))


def spread_score(values, reference) -> np.ndarray:
    """How many robust standard deviations (1.4826 × the median absolute deviation) each value lies from the
    median of `reference` (negative: below)."""
    ref = np.asarray(reference, dtype=np.float64)
    mid = np.median(ref)
    sd = max(1.4826 * float(np.median(np.abs(ref - mid))), 1e-9)
    return (np.asarray(values, dtype=np.float64) - mid) / sd


def atypical(values, reference) -> np.ndarray:
    """Whether each ELBO lies more than FAR robust standard deviations below the reference's median: far outside
    what the model was trained on (a percentile alone would call the lowest 1% of test images odd too)."""
    return spread_score(values, reference) < -FAR
