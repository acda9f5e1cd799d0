"""Hand-written PyTorch references for ``pyrovae bench``: the same networks and estimators as
pyrovae's Pyro model/guide pairs, with no probabilistic-programming layer.

* :class:`ReferenceVAE`: the IWAE paper's VAE (Burda et al. 2016, appendix C; tanh MLPs,
  Bernoulli decoder), loss = -(single-sample ELBO), full-data scale N/B, with the KL term in
  closed form (``analytic_kl=True``, Kingma & Welling 2014, appendix B) or by Monte Carlo.
* :class:`ReferenceM2`: M2 (Kingma et al. 2014, eq. 7) on unlabelled data, the class summed
  exactly: sum_y q(y|x) [L(x, y)] + H(q(y|x)), all classes in one batched pass.
* :func:`reference_iwae`: per-datapoint IWAE log p(x) (Burda et al. 2016, eq. 8), examples
  and samples in chunks of at most ``max_rows`` rows.

Plain ``torch.nn`` modules throughout, so the timings measure what PyTorch alone costs.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from pyrovae.nets import (
    plain_mlp,  # the same networks as pyrovae's, without the PyroModule layer
)

__all__ = ["ReferenceVAE", "ReferenceM2", "reference_iwae"]

LOG_2PI = math.log(2 * math.pi)


def _std_normal_log_prob(z):
    return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)


def _normal_log_prob(z, loc, scale):
    return (-0.5 * ((z - loc) / scale).pow(2) - scale.log() - 0.5 * LOG_2PI).sum(-1)


def _bernoulli_log_prob(logits, x):
    return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)


class ReferenceVAE(nn.Module):
    """q(z|x) = N(mu(x), sigma(x)^2), p(z) = N(0, I), p(x|z) = Bernoulli(f(z)).

    :param int num_pixels: P. :param int latent_dim: D. :param tuple hidden: widths.
    """

    min_scale = 1e-4

    def __init__(self, num_pixels=784, latent_dim=50, hidden=(200, 200), analytic_kl=True):
        super().__init__()
        self.latent_dim, self.analytic_kl = latent_dim, analytic_kl
        self.encoder = plain_mlp([num_pixels, *hidden, 2 * latent_dim])
        self.decoder = plain_mlp([latent_dim, *hidden, num_pixels])

    def encode(self, x):
        loc, raw = self.encoder(x).split(self.latent_dim, dim=-1)
        return loc, F.softplus(raw) + self.min_scale

    def forward(self, x, num_data=None):
        """-ELBO of the batch x (B, P) at full-data scale ``num_data / B`` (nats), a scalar."""
        loc, scale = self.encode(x)
        z = loc + scale * torch.randn_like(loc)
        log_lik = _bernoulli_log_prob(self.decoder(z), x)
        if self.analytic_kl:
            kl = 0.5 * (loc.pow(2) + scale.pow(2) - 1).sum(-1) - scale.log().sum(-1)
        else:
            kl = _normal_log_prob(z, loc, scale) - _std_normal_log_prob(z)
        return -(log_lik - kl).sum() * ((num_data or x.shape[0]) / x.shape[0])

    def log_weights(self, x, num_samples):
        """log p(x, z_k) - log q(z_k | x) for K = ``num_samples`` draws: (K, B)."""
        loc, scale = self.encode(x)
        z = loc + scale * torch.randn((num_samples,) + loc.shape, dtype=loc.dtype, device=loc.device)
        return (_bernoulli_log_prob(self.decoder(z), x) + _std_normal_log_prob(z)
                - _normal_log_prob(z, loc, scale))


class ReferenceM2(nn.Module):
    """M2's unlabelled objective with y summed over its C classes in one (C, B, ...) pass."""

    min_scale = 1e-4

    def __init__(self, num_pixels=784, latent_dim=50, hidden=(200, 200), num_classes=10):
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.classifier = plain_mlp([num_pixels, *hidden, num_classes])
        self.encoder = plain_mlp([num_pixels + num_classes, *hidden, 2 * latent_dim])
        self.decoder = plain_mlp([latent_dim + num_classes, *hidden, num_pixels])

    def forward(self, x, num_data=None):
        """-U(x) of the batch x (B, P) at full-data scale (nats), a scalar."""
        C, B = self.num_classes, x.shape[0]
        log_qy = self.classifier(x).log_softmax(-1)  # (B, C)
        y = torch.eye(C, dtype=x.dtype, device=x.device).unsqueeze(1).expand(C, B, C)
        loc, raw = self.encoder(torch.cat([x.expand(C, B, x.shape[-1]), y], -1)).split(self.latent_dim, dim=-1)
        scale = F.softplus(raw) + self.min_scale
        z = loc + scale * torch.randn_like(loc)  # (C, B, D)
        log_lik = _bernoulli_log_prob(self.decoder(torch.cat([z, y], -1)), x)
        elbo_y = log_lik + _std_normal_log_prob(z) - _normal_log_prob(z, loc, scale) - math.log(C)  # (C, B)
        qy = log_qy.exp().T  # (C, B)
        elbo = (qy * (elbo_y - log_qy.T)).sum(0)
        return -elbo.sum() * ((num_data or B) / B)


@torch.no_grad()
def reference_iwae(vae, x, num_samples, batch_size=100, max_rows=20000):
    """Per-datapoint IWAE log p(x) of a :class:`ReferenceVAE`, nats, shape (N,), float64."""
    out = []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        chunk = max(1, min(num_samples, max_rows // xb.shape[0]))
        lse = torch.full((xb.shape[0],), -math.inf, dtype=torch.float64, device=x.device)
        drawn = 0
        while drawn < num_samples:
            s = min(chunk, num_samples - drawn)
            lse = torch.logaddexp(lse, vae.log_weights(xb, s).double().logsumexp(0))
            drawn += s
        out.append(lse - math.log(num_samples))
    return torch.cat(out)
