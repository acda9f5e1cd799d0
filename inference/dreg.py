r"""The IWAE bound with doubly reparameterized gradients (Tucker, Lawson, Gu & Maddison 2019,
"Doubly Reparameterized Gradient Estimators for Monte Carlo Objectives", arXiv:1810.04152, eq. 5),
and its sticking-the-landing variant.

Per datapoint, with :math:`z_k = g_\phi(\epsilon_k)`, :math:`\log w_k = \log p_\theta(x, z_k) -
\log q_\phi(z_k|x)` and normalized weights :math:`\tilde w_k = w_k / \sum_j w_j`, the objective
is the IWAE bound :math:`\log \frac1K \sum_k w_k` (Burda et al. 2016, eq. 8). Its gradients:

* model: :math:`\nabla_\theta = \sum_k \tilde w_k \nabla_\theta \log w_k` (as ``iwae``);
* guide, ``iwae-dreg``: :math:`\nabla_\phi = \sum_k \tilde w_k^2 \,\partial_{z_k} \log w_k \,
  \nabla_\phi z_k`, with :math:`\log q` held fixed inside :math:`\log w_k` (Tucker et al., eq. 5):
  unbiased for the IWAE gradient, and its signal-to-noise ratio grows with K, where that of
  the plain reparameterized IWAE gradient falls as :math:`O(1/\sqrt K)` (Rainforth et al. 2018);
* guide, ``iwae-stl``: :math:`\sum_k \tilde w_k \,\partial_{z_k} \log w_k \,\nabla_\phi z_k`, the
  path derivative alone (Roeder et al. 2017, section 5), biased for K > 1.

One surrogate gives both parts in one backward pass. With :math:`\bar z` a stop-gradient,
:math:`S = \sum_k (\tilde w_k - \tilde w_k^2) \log p_\theta(x, \bar z_k) + \sum_k \tilde w_k^2
[\log p_\theta(x, z_k) - \log q_{\bot}(z_k)]`: its gradient in :math:`\theta` is
:math:`\sum_k \tilde w_k \nabla_\theta \log p` and in :math:`\phi` the DReG term (the model runs
twice, on :math:`z` and on :math:`\bar z`). For ``iwae-stl``, :math:`S = \sum_k \tilde w_k [\log
p_\theta(x, z_k) - \log q_\bot(z_k)]`, one model run.

Every site's log-density is taken per datapoint (the data plate's subsample scale is applied to
the bound, not inside the log-mean-exp), so a minibatch gives an unbiased full-data estimate.
"""

import math

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import ELBO
from pyro.poutine.util import prune_subsample_sites

from pyrovae.errors import ConfigError
from pyrovae.inference.stl import stopped_log_prob

__all__ = ["ParticleBound", "IWAE_DReG", "IWAE_STL"]


class ParticleBound(ELBO):
    """A K-sample bound on log p(x) per datapoint (K = ``num_particles`` >= 2, vectorized in a
    particle plate left of the model's plates), as a Pyro ELBO usable with stock ``SVI``
    (``loss``, ``loss_and_grads``) and ``ELBOModule`` (``differentiable_loss``). Subclasses give
    the surrogate whose gradient is the estimator's (``_surrogate``).

    :raises ConfigError: for ``num_particles < 2``; at the first step, for a site outside the data plate.
    """

    multi_sample = True  # make_elbo refuses one particle
    doubly = False  # a second model run on the stopped values (IWAE_DReG)

    def __init__(self, num_particles=2, max_plate_nesting=1, vectorize_particles=True, **kwargs):
        if num_particles < 2:
            raise ConfigError("the iwae bound with one particle is the ELBO; pass --num-particles K >= 2")
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting,
                         vectorize_particles=True, **kwargs)

    def _get_trace(self, model, guide, args, kwargs):  # Pyro's per-particle hook; the K particles run in one pass
        raise NotImplementedError("the particles are drawn vectorized in _traces")

    def _traces(self, model, guide, args, kwargs):
        with pyro.plate("particles", self.num_particles, dim=-(self.max_plate_nesting + 1)):
            guide_trace = prune_subsample_sites(poutine.trace(guide).get_trace(*args, **kwargs))
            model_trace = prune_subsample_sites(
                poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs))
            stopped = None
            if self.doubly:
                frozen = guide_trace.copy()  # shallow: each site is copied before its value is replaced
                for name, site in guide_trace.nodes.items():
                    if site["type"] == "sample":
                        frozen.nodes[name] = {**site, "value": site["value"].detach()}
                stopped = prune_subsample_sites(
                    poutine.trace(poutine.replay(model, trace=frozen)).get_trace(*args, **kwargs))
        return guide_trace, model_trace, stopped

    def _per_datapoint(self, trace, log_prob=None):
        """Sum of the sample sites' unscaled log-densities, shape (K, B); and the data plate's scale."""
        total, scale = 0.0, 1.0
        for site in trace.nodes.values():
            if site["type"] != "sample" or (log_prob is not None and site["is_observed"]):
                continue
            lp = site["fn"].log_prob(site["value"]) if log_prob is None else log_prob(site)
            if site["mask"] is not None:
                lp = torch.where(torch.as_tensor(site["mask"]), lp, lp.new_zeros(()))
            if lp.dim() < 2 or lp.shape[0] != self.num_particles:
                raise ConfigError(f"site {site['name']!r} has log-density shape {tuple(lp.shape)}; the iwae "
                                  "estimators need every site inside the data plate, with per-datapoint densities")
            total, scale = total + lp, site["scale"]
        return total, scale

    def _surrogate(self, model, guide, args, kwargs):
        """``(loss, surrogate)``: the negative bound's value and the tensor whose gradient is the estimator's."""
        raise NotImplementedError

    def loss(self, model, guide, *args, **kwargs):
        with torch.no_grad():
            return self._surrogate(model, guide, args, kwargs)[0].item()

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """The negative IWAE bound (value), with the estimator's gradient."""
        loss, surrogate = self._surrogate(model, guide, args, kwargs)
        return loss + (surrogate - surrogate.detach())

    def loss_and_grads(self, model, guide, *args, **kwargs):
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward(retain_graph=self.retain_graph)
        return loss.item()


class IWAE_DReG(ParticleBound):
    """The IWAE bound with DReG guide gradients (module doc): ``iwae-dreg``.

    :raises ConfigError: at the first step, for a guide site without ``rsample`` or with a flow.
    """

    reparameterized_only = True
    doubly = True

    def _surrogate(self, model, guide, args, kwargs):
        guide_trace, model_trace, stopped = self._traces(model, guide, args, kwargs)
        log_p, scale = self._per_datapoint(model_trace)
        log_q_stopped, _ = self._per_datapoint(guide_trace, stopped_log_prob)
        log_w = log_p - log_q_stopped  # the values of log w_k, (K, B)
        bound = torch.logsumexp(log_w.detach(), 0) - math.log(self.num_particles)  # (B,)
        w = torch.softmax(log_w.detach(), 0)
        if self.doubly:
            log_p_stopped, _ = self._per_datapoint(stopped)
            surrogate = ((w - w**2) * log_p_stopped + w**2 * log_w).sum(0)
        else:
            surrogate = (w * log_w).sum(0)
        return -scale * bound.sum(), -scale * surrogate.sum()


class IWAE_STL(IWAE_DReG):
    """The IWAE bound with the path-derivative guide gradient (module doc): ``iwae-stl``."""

    doubly = False
