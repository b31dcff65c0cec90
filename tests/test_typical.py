"""How typical an input is: its ELBO among the test images' (percentile, robust distance, the atypical call)."""

import numpy as np
import torch

from ssvae_core import typical
from ssvae_core.models import M1M2, M2, ModelConfig


def test_percentile_and_atypical():
    ref = np.arange(100.0)  # median 49.5, MAD 25 → robust sd 37.065
    assert typical.percentile([-1, 0, 50, 1000], ref).tolist() == [0.0, 0.0, 50.0, 100.0]
    assert typical.spread_score([49.5], ref)[0] == 0.0
    assert np.isclose(typical.spread_score([49.5 - 37.065], ref)[0], -1.0)
    assert typical.atypical([-120, -200, 0, 500], ref).tolist() == [False, True, False, False]  # only far below


def test_elbo_is_repeatable_and_uses_the_pixel_model():
    torch.manual_seed(0)
    cfg = ModelConfig(kind="m2", hidden=[16], z_dim=4, m1_hidden=[16], m1_z_dim=6)
    x = torch.rand(20, 64).numpy()
    for model in (M2(64, 3, cfg), M1M2(64, 3, cfg)):
        state = torch.random.get_rng_state()
        a, b = typical.elbo(model, x), typical.elbo(model, x)
        assert a.shape == (20,) and np.array_equal(a, b) and (a < 0).all()
        assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random stream is untouched
    m1m2 = M1M2(64, 3, cfg)
    torch.manual_seed(1)
    single = m1m2.m1.elbo(torch.as_tensor(x))["elbo"].detach().numpy()
    assert np.corrcoef(typical.elbo(m1m2, x, samples=8), single)[0, 1] > 0.9  # M1+M2's bound is its M1's
