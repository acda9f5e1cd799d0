r"""Missing-pixel imputation by self-normalized importance sampling.

With the observed pixels :math:`x_o` and the missing ones :math:`x_m` (mask ``m``), K samples
:math:`z_k \sim q(z)` fitted to :math:`x_o` alone, and weights
:math:`\log w_k = \log p(z_k) + \log p(x_o|z_k) - \log q(z_k)`,

* the posterior predictive log-likelihood of the true missing pixels is
  :math:`\log \hat p(x_m|x_o) = \log \sum_k w_k p(x_m|z_k) - \log \sum_k w_k`, the ratio of
  the IWAE estimates of :math:`p(x_o, x_m)` and :math:`p(x_o)` from the same samples
  (Burda et al. 2016, eq. 8; consistent as K grows);
* the imputation is the posterior predictive mean
  :math:`\sum_k \bar w_k \, \mathbb{E}[x_m|z_k]` with normalized weights :math:`\bar w_k`.

The likelihood must factorize over pixels (every likelihood in
:data:`pyrovae.models.LIKELIHOODS` does).
"""

import math
from typing import NamedTuple

import torch

from pyrovae.inference.marginal import particle_traces

__all__ = ["ImputationResult", "impute_batch"]


class ImputationResult(NamedTuple):
    log_likelihood_missing: torch.Tensor  #: log p-hat(x_m | x_o), nats per image, shape (B,)
    mean: torch.Tensor  #: posterior predictive mean of every pixel, shape (B, P)


@torch.no_grad()
def impute_batch(model, guide, x, mask, num_samples=1000, guide_input=None, max_rows=20000):
    """Impute the pixels of ``x`` (B, P) where ``mask`` (bool, B x P) is False.

    :param guide: q(z), fitted to the observed pixels, called as ``guide(guide_input)``.
    :param guide_input: what the guide reads (e.g. ``x`` with missing pixels filled);
        defaults to ``x``.
    :param int num_samples: K.
    :returns: an :class:`ImputationResult`.
    """
    observed = mask.to(x.dtype)
    B = x.shape[0]
    chunk = max(1, min(num_samples, max_rows // B))
    run_max = torch.full((B,), -math.inf, dtype=torch.float64, device=x.device)
    sum_w = torch.zeros(B, dtype=torch.float64, device=x.device)  # sum exp(lw - run_max)
    sum_wmean = torch.zeros_like(x, dtype=torch.float64)
    lse_wp = torch.full((B,), -math.inf, dtype=torch.float64, device=x.device)
    drawn = 0
    while drawn < num_samples:
        S = min(chunk, num_samples - drawn)
        guide_trace, model_trace = particle_traces(model, guide, x, S, guide_input=guide_input)
        lw = torch.zeros(S, B, dtype=torch.float64, device=x.device)
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            if site["is_observed"]:
                pixel_dist = site["fn"].base_dist  # per-pixel, batch shape (S, B, P)
                per_pixel = pixel_dist.log_prob(x).double()
                lw = lw + (per_pixel * observed).sum(-1)
                log_p_missing = (per_pixel * (1 - observed)).sum(-1)  # (S, B)
                pixel_mean = pixel_dist.mean.expand(S, B, -1).double()
            else:
                lw = lw + site["log_prob"].double()
        for name, site in guide_trace.nodes.items():
            if site["type"] == "sample" and not site["is_observed"]:
                lw = lw - site["log_prob"].double()
        new_max = torch.maximum(run_max, lw.max(0).values)
        rescale = torch.exp(run_max - new_max)
        w = torch.exp(lw - new_max)  # (S, B)
        sum_w = sum_w * rescale + w.sum(0)
        sum_wmean = sum_wmean * rescale[:, None] + (w[..., None] * pixel_mean).sum(0)
        lse_wp = torch.logaddexp(lse_wp, torch.logsumexp(lw + log_p_missing, 0))
        run_max = new_max
        drawn += S
    lse_w = run_max + torch.log(sum_w)
    return ImputationResult(lse_wp - lse_w, (sum_wmean / sum_w[:, None]).to(x.dtype))
