r"""Weights on the ELBO's KL term: β-VAE, KL warm-up and free bits.

With :math:`\mathcal{L} = \mathbb{E}_q[\log p(x|z)] - \mathrm{KL}(q(z|x) \| p(z))`, training
may optimize

* :math:`\mathbb{E}_q[\log p(x|z)] - \beta_t\,\mathrm{KL}` with :math:`\beta_t = \beta
  \min(1, t / T)`: β-VAE (Higgins et al. 2017, eq. 4) with ``beta``, and KL warm-up (Bowman et
  al. 2016, section 3.1; Sønderby et al. 2016, section 2.3) rising linearly from 0 over the first
  T optimizer steps (``--kl-warmup E`` epochs);
* free bits (Kingma et al. 2016, "Improved Variational Inference with Inverse Autoregressive
  Flow", arXiv:1606.04934, appendix C.8): :math:`\mathbb{E}_q[\log p(x|z)] - \sum_j \max(\lambda,
  \overline{\mathrm{KL}}_j)`, each latent dimension's KL averaged over the minibatch and held at
  no less than λ nats, so the optimizer gains nothing by pushing it lower.

The KL weight scales the log-densities of the latent sites in the model and the guide (a
messenger, :class:`KLScale`), so every reparameterized estimator (``trace``, ``meanfield``,
``stl``) keeps its own gradient and analytic KL terms. Free bits need the KL per dimension:
:class:`FreeBits_ELBO` computes it by Monte Carlo from the reparameterized sample (Independent
guide and prior densities, per dimension), with the weight β_t applied after the floor.
Evaluation always reports the unweighted ELBO and log-likelihood.
"""

import torch
from pyro.infer import ELBO, Trace_ELBO
from pyro.poutine.messenger import Messenger

from pyrovae.errors import ConfigError

__all__ = ["KLScale", "KLWeighted", "FreeBits_ELBO", "WEIGHTABLE"]

WEIGHTABLE = ("trace", "meanfield", "stl")  # reparameterized single-sample ELBOs


class KLScale(Messenger):
    """Multiply the log-density of every latent (unobserved) sample site by ``weight``."""

    def __init__(self, weight):
        super().__init__()
        self.weight = weight

    def _pyro_sample(self, msg):
        if not msg["is_observed"]:
            msg["scale"] = msg["scale"] * self.weight


class KLWeighted(ELBO):
    """An ELBO whose KL term is weighted by :math:`\\beta_t = \\beta \\min(1, t / T)` (module doc);
    ``set_step(t)`` moves the schedule (the training loop calls it before each step, so a
    resumed run continues where it stopped). A Pyro ELBO: ``loss``, ``loss_and_grads``,
    ``differentiable_loss``.

    :param elbo: the inner estimator (``Trace_ELBO``, ``TraceMeanField_ELBO``, ``STL_ELBO`` or
        :class:`FreeBits_ELBO`).
    :param float beta: β >= 0.
    :param int warmup_steps: T, steps of the linear warm-up (0: none).
    """

    def __init__(self, elbo, beta=1.0, warmup_steps=0):
        if not beta >= 0 or warmup_steps < 0:
            raise ConfigError(f"--beta must be >= 0 and --kl-warmup >= 0, got {beta} and {warmup_steps} steps")
        super().__init__(num_particles=elbo.num_particles, max_plate_nesting=elbo.max_plate_nesting,
                         vectorize_particles=elbo.vectorize_particles)
        self.elbo, self.beta, self.warmup_steps, self.step = elbo, beta, warmup_steps, 0

    def set_step(self, step):
        self.step = step
        if hasattr(self.elbo, "set_step"):
            self.elbo.set_step(step)

    @property
    def weight(self):
        """β_t at the current step."""
        ramp = min(1.0, self.step / self.warmup_steps) if self.warmup_steps else 1.0
        return self.beta * ramp

    def _get_trace(self, model, guide, args, kwargs):  # the inner estimator draws the traces
        raise NotImplementedError

    def _weighted(self, fn):
        return KLScale(self.weight)(fn)

    def loss(self, model, guide, *args, **kwargs):
        return self.elbo.loss(self._weighted(model), self._weighted(guide), *args, **kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs):
        return self.elbo.loss_and_grads(self._weighted(model), self._weighted(guide), *args, **kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        return self.elbo.differentiable_loss(self._weighted(model), self._weighted(guide), *args, **kwargs)


class FreeBits_ELBO(Trace_ELBO):
    """The reparameterized ELBO with free bits: each latent dimension's KL, averaged over the
    minibatch (and the particles), counts as no less than ``free_bits`` nats (module doc). The
    KL is the Monte Carlo :math:`\\log q(z_d|x) - \\log p(z_d)` of the sample, per dimension
    where guide and prior are ``Independent`` (diagonal), otherwise per latent site. Under
    :class:`KLScale` the floored KL is multiplied by the site's weight.

    :raises ConfigError: at the first step, for a latent site without ``rsample``.
    """

    reparameterized_only = True

    def __init__(self, free_bits=0.0, **kwargs):
        if not free_bits >= 0:
            raise ConfigError(f"--free-bits must be >= 0, got {free_bits}")
        super().__init__(**kwargs)
        self.free_bits = free_bits

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        reconstruction, kl = 0.0, 0.0
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            if site["is_observed"]:
                reconstruction = reconstruction + site["log_prob_sum"]
                continue
            q = guide_trace.nodes[name]
            if not q["fn"].has_rsample:
                raise ConfigError(f"--free-bits needs reparameterized latents; site {name!r} is "
                                  f"{type(q['fn']).__name__}")
            per_dim = _per_dimension(q["fn"], q["value"]) - _per_dimension(site["fn"], site["value"])
            batch = per_dim.reshape(-1, per_dim.shape[-1]) if per_dim.dim() > 1 else per_dim.reshape(-1, 1)
            mean = batch.mean(0)  # over the particles and the minibatch: (D,)
            # rows: as many terms as log_prob_sum adds (Pyro divides by the particles later); the
            # plate's subsample scale and the KL weight (KLScale) live in the site's scale
            kl = kl + torch.clamp(mean, min=self.free_bits).sum() * batch.shape[0] * _scalar(q["scale"])
        loss = -(reconstruction - kl)
        return loss.item(), loss


def _per_dimension(fn, value):
    """log-density per latent dimension, shape (..., B, D): the base of an ``Independent``
    with one reinterpreted dimension; else the site's log-density as one group, (..., B, 1)."""
    if isinstance(fn, torch.distributions.Independent) and fn.reinterpreted_batch_ndims == 1:
        return fn.base_dist.log_prob(value)
    return fn.log_prob(value).unsqueeze(-1)


def _scalar(scale):
    return float(scale) if not torch.is_tensor(scale) else scale
