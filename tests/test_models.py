"""The bounds compute what the paper's equations say."""

import math

import pytest
import torch
import torch.nn.functional as F

from ssvae_core.models import (
    M1,
    M1M2,
    M2,
    ModelConfig,
    Softplus,
    build_model,
    kl_normal,
    log_bernoulli,
    log_gaussian,
)


def test_kl_matches_monte_carlo():
    torch.manual_seed(0)
    mu, logvar = torch.randn(3, 4), torch.randn(3, 4) * 0.5
    z = mu + torch.exp(0.5 * logvar) * torch.randn(200_000, 3, 4)
    log_q = log_gaussian(z, mu, logvar)
    log_p = log_gaussian(z, torch.zeros(3, 4), torch.zeros(3, 4))
    mc = (log_q - log_p).mean(0)
    assert torch.allclose(kl_normal(mu, logvar), mc, atol=0.02)


def test_log_gaussian_matches_torch_distribution():
    x, mu, logvar = torch.randn(5, 3), torch.randn(5, 3), torch.randn(5, 3)
    ref = torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).log_prob(x).sum(-1)
    assert torch.allclose(log_gaussian(x, mu, logvar), ref, atol=1e-5)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_unlabelled_bound_equals_slow_reference_loop(likelihood):
    """U(x) = sum_y q(y|x) L(x,y) + H(q(y|x)), checked against one L(x,y) call per class."""
    torch.manual_seed(1)
    k, b, d = 4, 6, 12
    model = M2(d, k, ModelConfig(hidden=[16], z_dim=3, likelihood=likelihood))
    x = torch.rand(b, d).bernoulli() if likelihood == "bernoulli" else torch.randn(b, d)
    # same noise for the vectorised pass and the loop: eps depends only on the (class-major) row
    eps = torch.randn(k * b, 3)
    orig = torch.randn_like
    calls = iter([eps])
    torch.randn_like = lambda t: next(calls) if t.shape == eps.shape else orig(t)
    try:
        fast = model.elbo_unlabelled(x)["elbo"]
    finally:
        torch.randn_like = orig
    qy = F.softmax(model.classifier(x), -1)
    slow = torch.zeros(b)
    for c in range(k):
        y = F.one_hot(torch.full((b,), c), k).float()
        e = eps[c * b:(c + 1) * b]
        torch.randn_like = lambda t, e=e: e
        try:
            slow += qy[:, c] * model.elbo_labelled(x, y)["elbo"]
        finally:
            torch.randn_like = orig
    slow += -(qy * qy.log()).sum(-1)
    assert torch.allclose(fast, slow, atol=1e-4)


def test_labelled_bound_terms():
    torch.manual_seed(2)
    model = M2(10, 3, ModelConfig(hidden=[8], z_dim=2))
    x, y = torch.rand(5, 10).bernoulli(), F.one_hot(torch.tensor([0, 1, 2, 0, 1]), 3).float()
    t = model.elbo_labelled(x, y)
    assert torch.allclose(t["elbo"], t["log_px"] - math.log(3) - t["kl_z"])
    assert (t["kl_z"] >= 0).all() and (t["log_px"] <= 0).all()


def _m2_losses(seed: int, *settings: dict) -> list[dict]:
    """M2's loss on one small batch under each keyword setting, with the same reparameterisation noise."""
    torch.manual_seed(seed)
    model = M2(10, 3, ModelConfig(hidden=[8], z_dim=2))
    x_l, y_l, x_u = torch.rand(4, 10).bernoulli(), torch.tensor([0, 1, 2, 1]), torch.rand(6, 10).bernoulli()
    out = []
    for kw in settings:
        torch.manual_seed(seed + 1)
        out.append(model.loss(x_l, y_l, x_u, **kw))
    return out


def test_m2_loss_weights_classification_by_beta():
    a, b = _m2_losses(3, {"beta": 0.0}, {"beta": 50.0})
    assert torch.allclose(b["loss"] - a["loss"], 50.0 * a["classification"], atol=1e-3)
    assert torch.allclose(a["loss"], -a["elbo_labelled"] - a["elbo_unlabelled"], atol=1e-4)


def test_m2_loss_in_one_pass_is_its_bounds_one_by_one():
    """J^alpha with each network run once on labelled and unlabelled rows together equals it from L(x,y), U(x)
    and q(y|x) computed on their own (paper eq. 9), in value and gradient, given the same noise."""
    torch.manual_seed(11)
    model, k = M2(10, 3, ModelConfig(hidden=[8], z_dim=2)), 3
    x_l, y_l, x_u = torch.rand(4, 10).bernoulli(), torch.tensor([0, 2, 2, 1]), torch.rand(6, 10).bernoulli()
    eps = (torch.randn(4, 2), torch.randn(k * 6, 2))
    got = model.loss(x_l, y_l, x_u, beta=3.0, kl_weight=0.7, lab_weight=0.2, eps=eps)
    lab = model.elbo_labelled(x_l, F.one_hot(y_l, k).float(), 0.7, eps=eps[0])
    unl = model.elbo_unlabelled(x_u, 0.7, eps=eps[1])
    ce = F.cross_entropy(model.classify(x_l), y_l)
    want = -0.2 * lab["elbo"].mean() - unl["elbo"].mean() + 3.0 * ce
    torch.testing.assert_close(got["loss"], want)
    torch.testing.assert_close(got["entropy"], unl["entropy"].mean())
    torch.testing.assert_close(got["log_px"], torch.cat([lab["log_px"], unl["log_px"]]).mean())
    params = list(model.parameters())
    for a, b in zip(torch.autograd.grad(got["loss"], params), torch.autograd.grad(want, params), strict=True):
        torch.testing.assert_close(a, b)
    torch.manual_seed(12)
    drawn = model.loss(x_l, y_l, x_u, beta=3.0)  # noise drawn inside: labelled rows' first, then the unlabelled
    torch.manual_seed(12)
    again = model.loss(x_l, y_l, x_u, beta=3.0, eps=(torch.randn(4, 2), torch.randn(k * 6, 2)))
    torch.testing.assert_close(drawn["loss"], again["loss"])


def test_labelled_weight_scales_only_the_labelled_bound():
    a, b = _m2_losses(7, {"beta": 5.0}, {"beta": 5.0, "lab_weight": 0.01})
    assert torch.allclose(b["loss"] - a["loss"], 0.99 * a["elbo_labelled"], atol=1e-3)


def test_kl_weight_scales_only_the_kl_terms():
    """KL warm-up: the bound with weight w is log p(x|.) + log p(y) - w KL, for M1 and inside U(x) for M2."""
    torch.manual_seed(5)
    m1, m2 = M1(10, ModelConfig(m1_hidden=[8], m1_z_dim=3)), M2(10, 3, ModelConfig(hidden=[8], z_dim=2))
    x_l, y_l, x_u = torch.rand(4, 10).bernoulli(), torch.tensor([0, 1, 2, 1]), torch.rand(6, 10).bernoulli()
    for w in (0.0, 0.3):
        torch.manual_seed(6)
        t = m1.loss(x_l, y_l, x_u, beta=0.0, kl_weight=w)
        assert torch.allclose(t["loss"], -(t["log_px"] - w * t["kl_z"]), atol=1e-4)
        assert torch.allclose(t["elbo"], t["log_px"] - t["kl_z"], atol=1e-4)  # reported: the true bound
        torch.manual_seed(6)
        full = m2.elbo_unlabelled(x_u)
        torch.manual_seed(6)
        warm = m2.elbo_unlabelled(x_u, kl_weight=w)
        assert torch.allclose(warm["elbo"] - full["elbo"], (1 - w) * full["kl_z"], atol=1e-3)


def test_m1m2_generates_pixels_and_classifies():
    cfg = ModelConfig(kind="m1m2", hidden=[8], z_dim=2, m1_hidden=[16], m1_z_dim=5, z1_active=3)
    model = M1M2(20, 4, cfg)
    model.active.copy_(torch.tensor([0, 2, 4]))
    x = torch.rand(7, 20)
    assert model.classify(x).shape == (7, 4)
    z = model.encode_z(x, F.one_hot(torch.zeros(7, dtype=torch.long), 4).float())
    img = model.decode_x(z, F.one_hot(torch.arange(7) % 4, 4).float())
    assert img.shape == (7, 20) and (img >= 0).all() and (img <= 1).all()
    out = model.loss(x[:2], torch.tensor([0, 1]), x[2:], 1.0)
    out["loss"].backward()
    assert all(p.grad is None for p in model.m1.parameters())  # M1 stays fixed: z1 carries no gradient
    assert all(p.grad is not None for p in model.m2.parameters())


def test_m1_elbo_and_build_model_errors():
    m1 = M1(12, ModelConfig(m1_hidden=[8], m1_z_dim=2))
    t = m1.elbo(torch.rand(3, 12).bernoulli())
    assert torch.allclose(t["elbo"], t["log_px"] - t["kl_z"])
    with pytest.raises(ValueError, match="Unknown model"):
        build_model(ModelConfig(kind="m3"), 12, 10)


def test_every_class_bound_matches_labelled_bound():
    """elbo_every_class(x)[:, y] is L(x,y) of elbo_labelled: the class-major layout puts each class in its column."""
    torch.manual_seed(3)
    k, b, d = 3, 5, 7
    model = M2(d, k, ModelConfig(hidden=[16], z_dim=2))
    with torch.no_grad():  # q(z|x,y) at the clamp's floor: z is its mean, both passes see the same z
        model.encoder.net[-1].bias[2:].fill_(-40.0)
        model.encoder.net[-1].weight[2:].zero_()
    x = torch.rand(b, d).bernoulli()
    every = model.elbo_every_class(x)["elbo"]
    for y in range(k):
        lab = model.elbo_labelled(x, F.one_hot(torch.full((b,), y), k).float())["elbo"]
        assert torch.allclose(every[:, y], lab, atol=1e-3)


def test_softplus_matches_torch_in_value_and_gradient():
    t = torch.cat([torch.linspace(-100, 100, 50001), torch.randn(5000) * 3]).requires_grad_()  # both sides of 30
    ours = Softplus()(t)
    ours.sum().backward()
    ours_grad = t.grad.clone()
    t.grad = None
    ref = torch.nn.functional.softplus(t)
    ref.sum().backward()
    assert (ours - ref).abs().max() < 2e-6
    assert (ours_grad - t.grad).abs().max() < 1e-6
    assert torch.isfinite(Softplus()(torch.tensor([-1e30, 1e30, float("-inf")]))).all()


def test_log_bernoulli_matches_torch_in_value_and_gradient():
    """log Bern(x | sigmoid(l)) as x * l - softplus(l) is torch's -BCE-with-logits, binary or grey x, large |l| too."""
    torch.manual_seed(0)
    x = torch.cat([torch.rand(50, 30).bernoulli(), torch.rand(50, 30)])
    logits = torch.cat([torch.randn(50, 30) * 3, torch.linspace(-60, 60, 1500).view(50, 30)]).requires_grad_()
    ours = log_bernoulli(x, logits)
    (g_ours,) = torch.autograd.grad(ours.sum(), logits)
    ref = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    (g_ref,) = torch.autograd.grad(ref.sum(), logits)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(g_ours, g_ref, rtol=0, atol=1e-6)


def test_softplus_under_vmap_matches_a_loop():
    t = torch.randn(3, 7, 5)
    batched = torch.func.vmap(Softplus())(t)
    assert torch.allclose(batched, torch.stack([Softplus()(row) for row in t]))
    grads = torch.func.vmap(torch.func.grad(lambda v: Softplus()(v).sum()))(t)
    assert torch.allclose(grads, torch.sigmoid(t), atol=1e-7)
