r"""VIMCO: the multi-sample score-function estimator with leave-one-out baselines (Mnih &
Rezende 2016, "Variational Inference for Monte Carlo Objectives", arXiv:1602.06725, eqs. 5-10),
for discrete latents.

Per datapoint, with K samples :math:`h_k \sim q(h|x)`, :math:`\log w_k = \log p(x, h_k) -
\log q(h_k|x)` and the bound :math:`\hat L = \log \frac1K \sum_k w_k`, the gradient is

.. math::
    \nabla \hat L = \sum_k \hat L(h_k | h_{-k}) \nabla \log q(h_k|x) + \sum_k \tilde w_k \nabla \log w_k,

with the learning signal of sample k, :math:`\hat L(h_k|h_{-k}) = \hat L - \log \frac1K
(\sum_{j \ne k} w_j + \hat w_{-k})`, where :math:`\log \hat w_{-k}` is the mean of the other
samples' log weights (the geometric mean, eq. 10): a baseline for each sample from the others,
with no parameters to learn. Only the guide's non-reparameterized sites enter the first term;
reparameterized ones flow through the second (pathwise), so mixed models work too.
"""

import math

import torch

from pyrovae.inference.dreg import ParticleBound

__all__ = ["VIMCO"]


def leave_one_out_signal(log_w):
    """:math:`\\hat L - \\hat L_{-k}` per sample, shape (K, B), from log weights (K, B) (no gradient)."""
    K = log_w.shape[0]
    bound = torch.logsumexp(log_w, 0) - math.log(K)
    others_mean = (log_w.sum(0, keepdim=True) - log_w) / (K - 1)  # (K, B): mean of the others' log w
    replaced = log_w.unsqueeze(0).expand(K, *log_w.shape).clone()  # (k, j, B): sample k's set, entry k replaced
    index = torch.arange(K)
    replaced[index, index] = others_mean
    return bound - (torch.logsumexp(replaced, 1) - math.log(K))


class VIMCO(ParticleBound):
    """The K-sample bound (K = ``num_particles`` >= 2) with VIMCO gradients (module doc): ``vimco``."""

    def _surrogate(self, model, guide, args, kwargs):
        guide_trace, model_trace, _ = self._traces(model, guide, args, kwargs)
        log_p, scale = self._per_datapoint(model_trace)
        log_q, _ = self._per_datapoint(guide_trace)
        log_q_score, _ = self._per_datapoint(guide_trace, _score_part)
        log_w = log_p - log_q  # (K, B), with gradients
        lw = log_w.detach()
        bound = torch.logsumexp(lw, 0) - math.log(self.num_particles)
        w = torch.softmax(lw, 0)
        surrogate = (w * log_w).sum(0)
        if torch.is_tensor(log_q_score) and log_q_score.requires_grad:
            surrogate = surrogate + (leave_one_out_signal(lw) * log_q_score).sum(0)
        return -scale * bound.sum(), -scale * surrogate.sum()


def _score_part(site):
    """log q of a non-reparameterized guide site (the score-function term's); 0 for the others."""
    fn = site["fn"]
    if fn.has_rsample:
        return site["value"].new_zeros(()).expand(fn.log_prob(site["value"]).shape)
    return fn.log_prob(site["value"])
