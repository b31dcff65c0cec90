"""The paper's models: M1 (VAE), M2 (generative semi-supervised model), M1+M2, and a supervised baseline.

Notation follows Kingma et al. (2014): x image, y class, z latent; q(.) encoders, p(.) decoders.
Every bound is returned per example (a vector over the batch); the training loop averages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

MODELS = ("m1", "m2", "m1m2", "supervised")
LOG_2PI = math.log(2 * math.pi)


class _softplus(torch.autograd.Function):
    """softplus(t) = log(1 + e^t) as max(t, log(1 + e^min(t, 30))), gradient sigmoid(t)."""

    generate_vmap_rule = True  # batched.py trains stacked runs under torch.func.vmap

    @staticmethod
    def forward(t: torch.Tensor) -> torch.Tensor:
        # log(1 + e^t) > t everywhere, and within 1e-13 of t from t = 30 on (float32's e^t overflows past 88); four
        # passes over t, in place after the first (the CPU's log1p is slow)
        out = t.clamp(max=30.0).exp_().add_(1.0).log_()
        return out.clamp_min_(t)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (t,) = ctx.saved_tensors
        return torch.sigmoid(t).mul_(grad)


class Softplus(nn.Module):
    """The paper's activation, log(1 + e^t), within 2e-6 of nn.Softplus, without the per-element log1p of torch's
    CPU kernel (docs/experiments.md)."""

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return _softplus.apply(t)


ACTIVATIONS = {"softplus": Softplus, "relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh}


@dataclass
class ModelConfig:
    """Architecture; the defaults are the paper's (softplus MLPs, 50-d latents)."""

    kind: str = "m2"  # one of MODELS
    hidden: list[int] = field(default_factory=lambda: [500])  # M2 / supervised MLPs
    z_dim: int = 50  # M2's z (z2 in M1+M2)
    m1_hidden: list[int] = field(default_factory=lambda: [500, 500])
    m1_z_dim: int = 50  # M1's z (z1 in M1+M2)
    z1_active: int = 0  # M1+M2: number of active z1 units fed to M2 (set after M1 is trained)
    activation: str = "softplus"
    likelihood: str = "bernoulli"  # p(x|.) of the pixel models: "bernoulli" or "gaussian"


def guess_image_shape(x_dim: int) -> tuple[int, int, int]:
    """(C, H, W) of a square grey or RGB image with x_dim values; (1, 1, x_dim) when neither fits."""
    for c in (1, 3):
        side = math.isqrt(x_dim // c)
        if x_dim % c == 0 and side * side * c == x_dim:
            return c, side, side
    return 1, 1, x_dim


def mlp(sizes: list[int], activation: str) -> nn.Sequential:
    """Affine layers of `sizes`, with `activation` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def reparameterise(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    """z = mu + sigma * eps, eps ~ N(0, I) (the reparameterisation trick, paper eq. 10); eps is drawn here unless
    given (batched training draws each run's noise itself, see batched.py)."""
    return mu + torch.exp(0.5 * logvar) * (torch.randn_like(mu) if eps is None else eps)


def kl_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) summed over dimensions (analytic, Kingma & Welling appendix B)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def log_bernoulli(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log Bern(x | sigmoid(logits)) summed over pixels: sum of x * logits - softplus(logits) (torch's
    binary_cross_entropy_with_logits, the same value, is several times slower forward and backward on the CPU)."""
    return (x * logits).sum(-1) - _softplus.apply(logits).sum(-1)


def log_gaussian(x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(x | mu, diag exp(logvar)) summed over dimensions."""
    return -0.5 * (LOG_2PI + logvar + (x - mu).pow(2) / logvar.exp()).sum(-1)


class GaussianHead(nn.Module):
    """An MLP whose output is split into a mean and a (clamped) log-variance."""

    def __init__(self, sizes: list[int], activation: str):
        super().__init__()
        self.net = mlp(sizes[:-1] + [2 * sizes[-1]], activation)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.net(h).chunk(2, dim=-1)
        return mu, logvar.clamp(-12.0, 8.0)

    def every_class(self, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """forward([x, onehot(y)]) for y = 0..k-1, class-major (k*b rows); W_x x is computed once, not k times."""
        return self.labelled_and_every_class(x, x.new_zeros(0, k), k)

    def labelled_and_every_class(self, x: torch.Tensor, y_l: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """forward([x, y]) for the first len(y_l) rows of x with their one-hot y_l, then for every class y = 0..k-1
        of the other rows, class-major: len(y_l) + k*(len(x) - len(y_l)) rows in one pass; W_x x is computed once
        per image, not k times."""
        first, d, n_l = self.net[0], x.shape[-1], y_l.shape[0]
        hx = F.linear(x, first.weight[:, :d], first.bias)  # W_x x + b, shared by every class
        w_y = first.weight[:, d:].t().contiguous()  # K×H: laid out like hx, so the sum is class-major, no copy
        every = (hx[n_l:].unsqueeze(0) + w_y.unsqueeze(1)).view(-1, hx.shape[-1])  # + W_y y for every class
        h = torch.cat([hx[:n_l] + y_l @ w_y, every])  # + W_y y_l (a product: cheaper to differentiate than w_y[i])
        mu, logvar = self.net[1:](h).chunk(2, dim=-1)
        return mu, logvar.clamp(-12.0, 8.0)


class M1(nn.Module):
    """M1, the latent-feature model: q(z|x) = N(mu(x), sigma^2(x)), p(z) = N(0, I), p(x|z) Bernoulli."""

    def __init__(self, x_dim: int, cfg: ModelConfig, image_shape: tuple[int, int, int] | None = None):
        super().__init__()
        self.x_dim, self.z_dim = x_dim, cfg.m1_z_dim
        self.image_shape = tuple(image_shape or guess_image_shape(x_dim))  # (C, H, W) of x
        self.encoder = GaussianHead([x_dim, *cfg.m1_hidden, cfg.m1_z_dim], cfg.activation)
        self.decoder = mlp([cfg.m1_z_dim, *reversed(cfg.m1_hidden), x_dim], cfg.activation)

    def elbo(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)) (paper eq. 1), per example."""
        mu, logvar = self.encoder(x)
        log_px = log_bernoulli(x, self.decoder(reparameterise(mu, logvar)))
        kl_z = kl_normal(mu, logvar)
        return {"elbo": log_px - kl_z, "log_px": log_px, "kl_z": kl_z}

    def loss(self, x_l: torch.Tensor, y_l: torch.Tensor, x_u: torch.Tensor, beta: float,
             kl_weight: float = 1.0, lab_weight: float = 1.0) -> dict[str, torch.Tensor]:
        """-mean ELBO over every image, labelled or not (M1 ignores labels); kl_weight < 1 during KL warm-up."""
        terms = self.elbo(torch.cat([x_l, x_u]))
        out = {k: v.mean() for k, v in terms.items()}
        out["loss"] = -(out["log_px"] - kl_weight * out["kl_z"])
        return out

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Latent means E_q[z|x], the features the M1 classifier is trained on."""
        return self.encoder(x)[0]

    @torch.no_grad()
    def decode_x(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel means of p(x|z)."""
        return torch.sigmoid(self.decoder(z))


class M2(nn.Module):
    """M2: p(y) = Cat(1/K), p(z) = N(0, I), p(x|y,z); q(z|x,y) Gaussian, q(y|x) categorical (paper eq. 2-4)."""

    def __init__(self, x_dim: int, num_classes: int, cfg: ModelConfig, likelihood: str | None = None,
                 image_shape: tuple[int, int, int] | None = None):
        super().__init__()
        self.num_classes = num_classes
        self.x_dim, self.z_dim = x_dim, cfg.z_dim
        self.image_shape = tuple(image_shape or guess_image_shape(x_dim))  # (C, H, W) of x
        self.likelihood = likelihood or cfg.likelihood
        self.classifier = mlp([x_dim, *cfg.hidden, num_classes], cfg.activation)
        self.encoder = GaussianHead([x_dim + num_classes, *cfg.hidden, cfg.z_dim], cfg.activation)
        out = x_dim if self.likelihood == "bernoulli" else 2 * x_dim
        self.decoder = mlp([cfg.z_dim + num_classes, *reversed(cfg.hidden), out], cfg.activation)

    def log_px(self, x: torch.Tensor, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log p(x|y,z) under the configured likelihood."""
        out = self.decoder(torch.cat([z, y], -1))
        if self.likelihood == "bernoulli":
            return log_bernoulli(x, out)
        mu, logvar = out.chunk(2, dim=-1)
        return log_gaussian(x, mu, logvar.clamp(-12.0, 8.0))

    def elbo_labelled(self, x: torch.Tensor, y: torch.Tensor, kl_weight: float = 1.0,
                      eps: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """L(x,y) = E_q(z|x,y)[log p(x|y,z)] + log p(y) - KL(q(z|x,y) || p(z)) (paper eq. 6), y one-hot; `eps`: the
        noise of z (drawn if None)."""
        return self._bound(x, y, *self.encoder(torch.cat([x, y], -1)), kl_weight, eps)

    def _bound(self, x: torch.Tensor, y: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
               kl_weight: float, eps: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """L(x,y) (paper eq. 6) given q(z|x,y) = N(mu, exp(logvar)); kl_weight < 1 only during KL warm-up."""
        log_px = self.log_px(x, reparameterise(mu, logvar, eps), y)
        kl_z = kl_normal(mu, logvar)
        log_py = -math.log(self.num_classes)
        return {"elbo": log_px + log_py - kl_weight * kl_z, "log_px": log_px, "kl_z": kl_z}

    def elbo_every_class(self, x: torch.Tensor, kl_weight: float = 1.0,
                         eps: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """L(x,y) (paper eq. 6) and its terms for every class y at once, each b×K, in one pass; `eps`: the noise of
        z, K*b rows class-major (drawn if None)."""
        b, k = x.shape[0], self.num_classes
        x_rep = x.repeat(k, 1)  # class-major: rows [c*b:(c+1)*b] carry class c
        y_rep = F.one_hot(torch.arange(k, device=x.device).repeat_interleave(b), k).to(x.dtype)
        bound = self._bound(x_rep, y_rep, *self.encoder.every_class(x, k), kl_weight, eps)
        return {n: t.view(k, b).t() for n, t in bound.items()}

    def elbo_unlabelled(self, x: torch.Tensor, kl_weight: float = 1.0,
                        eps: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """U(x) = sum_y q(y|x) L(x,y) + H(q(y|x)) (paper eq. 7), the exact sum over all K classes in one pass."""
        return self._sum_over_classes(self.elbo_every_class(x, kl_weight, eps),
                                      F.log_softmax(self.classifier(x), -1))

    @staticmethod
    def _sum_over_classes(every: dict[str, torch.Tensor], log_qy: torch.Tensor) -> dict[str, torch.Tensor]:
        """U(x) and its terms from L(x,y) and its terms for every class (each b×K) and log q(y|x) (paper eq. 7)."""
        qy = log_qy.exp()
        entropy = -(qy * log_qy).sum(-1)
        out = {n: (qy * t).sum(-1) for n, t in every.items()}
        out["elbo"] = out["elbo"] + entropy
        out["entropy"] = entropy
        return out

    def loss(self, x_l: torch.Tensor, y_l: torch.Tensor, x_u: torch.Tensor, beta: float,
             kl_weight: float = 1.0, lab_weight: float = 1.0,
             eps: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """J^alpha per example: -lab_weight * mean L(x,y) - mean U(x) + beta * mean[-log q(y|x)] (paper eq. 9);
        `eps`: the noise of z for the labelled rows and for the K*len(x_u) unlabelled ones, in the order they are
        drawn when None. Each network runs once on the labelled and unlabelled rows together."""
        k, n_l, n_u = self.num_classes, x_l.shape[0], x_u.shape[0]
        y = F.one_hot(torch.cat([y_l, torch.arange(k, device=x_u.device).repeat_interleave(n_u)]), k).to(x_l.dtype)
        x = torch.cat([x_l, x_u])  # every network sees the labelled rows first
        mu, logvar = self.encoder.labelled_and_every_class(x, y[:n_l], k)  # q(z|x,y): labelled, then every y
        if eps is None:
            eps = (torch.randn_like(mu[:n_l]), torch.randn_like(mu[n_l:]))
        bound = self._bound(torch.cat([x_l, x_u.repeat(k, 1)]), y, mu, logvar, kl_weight, torch.cat(eps))
        lab = {n: t[:n_l] for n, t in bound.items()}  # L(x_l, y_l)
        log_q = F.log_softmax(self.classifier(x), -1)  # log q(y|x)
        unl = self._sum_over_classes({n: t[n_l:].view(k, n_u).t() for n, t in bound.items()}, log_q[n_l:])  # U(x_u)
        ce = F.nll_loss(log_q[:n_l], y_l)
        loss = -lab_weight * lab["elbo"].mean() - unl["elbo"].mean() + beta * ce
        mix = lambda a, b: (a.sum() + b.sum()) / (n_l + n_u)  # noqa: E731 - mean over all images
        return {"loss": loss, "elbo_labelled": lab["elbo"].mean(), "elbo_unlabelled": unl["elbo"].mean(),
                "log_px": mix(lab["log_px"], unl["log_px"]), "kl_z": mix(lab["kl_z"], unl["kl_z"]),
                "classification": ce, "entropy": unl["entropy"].mean()}

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q(y|x)."""
        return self.classifier(x)

    @torch.no_grad()
    def relabel(self, perm: torch.Tensor) -> None:
        """Rename the classes in place: new class k is old class perm[k] in q(y|x), q(z|x,y) and p(x|y,z)."""
        k = self.num_classes
        out = self.classifier[-1]
        out.weight.copy_(out.weight[perm])
        out.bias.copy_(out.bias[perm])
        for first in (self.encoder.net[0], self.decoder[0]):  # y is the last K inputs of each
            first.weight[:, -k:] = first.weight[:, -k:][:, perm]

    def posterior_z(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-variance) of q(z|x,y), y one-hot."""
        return self.encoder(torch.cat([x, y], -1))

    def encode_z(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean of q(z|x,y), y one-hot: the 'style' of x."""
        return self.posterior_z(x, y)[0]

    def decode_x(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean of p(x|y,z), y one-hot."""
        out = self.decoder(torch.cat([z, y], -1))
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else out.chunk(2, -1)[0]


class M1M2(nn.Module):
    """M1+M2: M2 with a Gaussian p(z1|y,z2) on M1's latent z1 (sampled in training, means at test)."""

    def __init__(self, x_dim: int, num_classes: int, cfg: ModelConfig, image_shape: tuple[int, int, int] | None = None):
        super().__init__()
        self.num_classes, self.z1_dim = num_classes, cfg.m1_z_dim
        self.x_dim, self.z_dim = x_dim, cfg.z_dim  # pixels in, and z2 (the style latent decode_x takes)
        self.m1 = M1(x_dim, cfg, image_shape)
        self.image_shape = self.m1.image_shape
        n_active = cfg.z1_active or cfg.m1_z_dim
        self.register_buffer("active", torch.arange(n_active))  # which z1 units M2 sees
        self.m2 = M2(n_active, num_classes, cfg, likelihood="gaussian", image_shape=(1, 1, n_active))

    @torch.no_grad()
    def q_z1(self, x: torch.Tensor) -> torch.Tensor:
        """[mean, log-variance] of q(z1|x) on the active units, side by side (b × 2A); M1 is fixed."""
        mu, logvar = self.m1.encoder(x)
        return torch.cat([mu[:, self.active], logvar[:, self.active]], -1)

    def z1(self, x: torch.Tensor, sample: bool) -> torch.Tensor:
        """z1 ~ q(z1|x) (sample=True, training) or its mean (evaluation), active units only."""
        mu, logvar = self.q_z1(x).chunk(2, -1)
        return reparameterise(mu, logvar) if sample else mu

    def loss(self, x_l: torch.Tensor, y_l: torch.Tensor, x_u: torch.Tensor, beta: float,
             kl_weight: float = 1.0, lab_weight: float = 1.0) -> dict[str, torch.Tensor]:
        """M2's J^alpha on z1 ~ q(z1|x) (M1 stays fixed)."""
        return self.loss_z1(self.q_z1(x_l), y_l, self.q_z1(x_u), beta, kl_weight, lab_weight)

    def loss_z1(self, q_l: torch.Tensor, y_l: torch.Tensor, q_u: torch.Tensor, beta: float,
                kl_weight: float = 1.0, lab_weight: float = 1.0,
                eps: tuple[torch.Tensor, ...] | None = None) -> dict[str, torch.Tensor]:
        """M2's J^alpha on z1 sampled afresh from given q(z1|x) parameters (rows of q_z1), e.g. computed once;
        `eps`: (z1 noise of the labelled rows, of the unlabelled rows, then M2's two) in the order drawn when None."""
        if eps is None:  # the one-by-one path: every draw made here, the call unchanged
            return self.m2.loss(reparameterise(*q_l.chunk(2, -1)), y_l, reparameterise(*q_u.chunk(2, -1)), beta,
                                kl_weight, lab_weight)
        return self.m2.loss(reparameterise(*q_l.chunk(2, -1), eps[0]), y_l, reparameterise(*q_u.chunk(2, -1), eps[1]),
                            beta, kl_weight, lab_weight, eps=(eps[2], eps[3]))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q(y|z1) at z1 = E[z1|x]."""
        return self.m2.classify(self.z1(x, False))

    def elbo_every_class(self, x: torch.Tensor, kl_weight: float = 1.0) -> dict[str, torch.Tensor]:
        """M2's L(z1,y) for every class y at z1 = E[z1|x], each term b×K."""
        return self.m2.elbo_every_class(self.z1(x, False), kl_weight)

    def posterior_z(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-variance) of q(z2|z1,y) at z1 = E[z1|x], y one-hot."""
        return self.m2.posterior_z(self.z1(x, False), y)

    def encode_z(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean of q(z2|z1,y) at z1 = E[z1|x]."""
        return self.posterior_z(x, y)[0]

    def decode_x(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Pixels: mean of p(z1|y,z2), inactive units at the prior mean 0, through M1's decoder."""
        z1 = torch.zeros(len(z), self.z1_dim, device=z.device, dtype=z.dtype)
        z1[:, self.active] = self.m2.decode_x(z, y)
        return self.m1.decode_x(z1)


class Supervised(nn.Module):
    """Baseline: the same q(y|x) MLP as M2, trained on the labelled images alone."""

    def __init__(self, x_dim: int, num_classes: int, cfg: ModelConfig,
                 image_shape: tuple[int, int, int] | None = None):
        super().__init__()
        self.x_dim = x_dim
        self.image_shape = tuple(image_shape or guess_image_shape(x_dim))  # (C, H, W) of x
        self.classifier = mlp([x_dim, *cfg.hidden, num_classes], cfg.activation)

    def loss(self, x_l: torch.Tensor, y_l: torch.Tensor, x_u: torch.Tensor, beta: float,
             kl_weight: float = 1.0, lab_weight: float = 1.0) -> dict[str, torch.Tensor]:
        """Cross-entropy on the labelled batch; unlabelled images are ignored."""
        ce = F.cross_entropy(self.classifier(x_l), y_l)
        return {"loss": ce, "classification": ce}

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q(y|x)."""
        return self.classifier(x)


def build_model(cfg: ModelConfig, x_dim: int, num_classes: int,
                image_shape: tuple[int, int, int] | None = None) -> nn.Module:
    """The model named by cfg.kind, freshly initialised, for images of `image_shape` (default: guessed from x_dim)."""
    if cfg.kind == "m1":
        return M1(x_dim, cfg, image_shape)
    if cfg.kind == "m2":
        return M2(x_dim, num_classes, cfg, image_shape=image_shape)
    if cfg.kind == "m1m2":
        return M1M2(x_dim, num_classes, cfg, image_shape)
    if cfg.kind == "supervised":
        return Supervised(x_dim, num_classes, cfg, image_shape)
    raise ValueError(f"Unknown model {cfg.kind!r}; choose one of {', '.join(MODELS)}.")
