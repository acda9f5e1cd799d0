r"""Continuous relaxation of discrete latent variables: the Gumbel-softmax / Concrete estimator.

A discrete latent site is replaced, in both the model and the guide, by its relaxation at
temperature :math:`\tau`: ``OneHotCategorical(logits)`` by ``RelaxedOneHotCategorical(tau,
logits)`` and ``Bernoulli(logits)`` by ``RelaxedBernoulli(tau, logits)`` (Jang, Gu & Poole 2017,
arXiv:1611.01144, eq. 1; Maddison, Mnih & Teh 2017, arXiv:1611.00712, sections 3.2-3.3). Samples
are reparameterized, so :class:`~pyro.infer.Trace_ELBO` differentiates through them; the
relaxed ELBO is biased, and the bias vanishes as :math:`\tau \to 0` while the gradient variance
grows. With ``straight_through`` the forward pass uses the one-hot (or 0/1) value and the
backward pass the relaxed sample's gradient (Jang et al. 2017, section 2.2).

Only training is relaxed: evaluation runs the model and guide unchanged, so log-likelihoods
stay comparable across estimators.
"""

import math

import pyro.distributions as dist
import torch
from torch.distributions.utils import _sum_rightmost
from pyro.infer import Trace_ELBO
from pyro.poutine.messenger import Messenger

__all__ = ["RelaxMessenger", "relax", "Relaxed_ELBO", "temperature_at"]


class _LogSpaceDensity:
    r"""Relaxed distributions whose density is computed in the base (log or logit) space.

    At low temperatures a relaxed one-hot sample :math:`y = \exp(x)` underflows to exact zeros and
    a relaxed Bernoulli sample :math:`y = \sigma(x)` rounds to 1, where the density's
    :math:`\log y` terms are infinite. Each sample carries its base value ``x`` (as Pyro's
    straight-through samples carry theirs), and ``log_prob`` of such a sample is
    :math:`\log p_{base}(x) - \log |dy/dx|`, finite for every x: the log-space Concrete density
    of Maddison et al. 2017 (appendix C). A value without a base value is scored as usual.
    """

    def rsample(self, sample_shape=torch.Size()):
        x = self.base_dist.rsample(sample_shape)
        (transform,) = self.transforms
        y = transform(x)
        y._base_value = x
        return y

    def log_prob(self, value):
        x = getattr(value, "_base_value", None)
        if x is None:
            return super().log_prob(value)
        (transform,) = self.transforms
        jacobian = _sum_rightmost(transform.log_abs_det_jacobian(x, value),
                                  len(self.event_shape) - transform.codomain.event_dim)
        return self.base_dist.log_prob(x) - jacobian


class _LogSpaceRelaxedOneHotCategorical(_LogSpaceDensity, dist.RelaxedOneHotCategorical):
    pass


class _LogSpaceRelaxedBernoulli(_LogSpaceDensity, dist.RelaxedBernoulli):
    pass


# discrete distribution -> (relaxed, straight-through relaxed), built as cls(temperature, logits=..., validate_args=False)
RELAXATIONS = {
    dist.OneHotCategorical: (_LogSpaceRelaxedOneHotCategorical, dist.RelaxedOneHotCategoricalStraightThrough),
    dist.Bernoulli: (_LogSpaceRelaxedBernoulli, dist.RelaxedBernoulliStraightThrough),
}


def _relaxed(fn, temperature, straight_through):
    """The relaxation of ``fn`` (through ``Independent`` and ``expand`` wrappers), or None."""
    if isinstance(fn, dist.Independent):
        base = _relaxed(fn.base_dist, temperature, straight_through)
        return None if base is None else base.to_event(fn.reinterpreted_batch_ndims)
    for cls, relaxed in RELAXATIONS.items():
        if type(fn) is cls:
            return relaxed[straight_through](fn.logits.new_tensor(temperature), logits=fn.logits, validate_args=False)
    return None


class RelaxMessenger(Messenger):
    """Swap every unobserved ``OneHotCategorical`` or ``Bernoulli`` sample site for its relaxation.

    :param float temperature: :math:`\tau > 0`.
    :param bool straight_through: one-hot forward values with relaxed gradients.
    :raises ValueError: for a non-positive temperature.
    """

    def __init__(self, temperature, straight_through=False):
        if not temperature > 0:
            raise ValueError(f"the relaxation temperature must be positive, got {temperature}")
        super().__init__()
        self.temperature = float(temperature)
        self.straight_through = bool(straight_through)

    def _pyro_sample(self, msg):
        if msg["is_observed"]:
            return
        fn = _relaxed(msg["fn"], self.temperature, self.straight_through)
        if fn is not None:
            msg["fn"] = fn


def relax(fn, temperature, straight_through=False):
    """``fn`` run under :class:`RelaxMessenger`."""
    return RelaxMessenger(temperature, straight_through)(fn)


def temperature_at(step, initial=1.0, minimum=0.5, anneal_rate=1e-4):
    r""":math:`\tau_t = \max(\tau_{min}, \tau_0 \exp(-r t))`, the schedule of Jang et al. 2017 (section 4)."""
    return max(minimum, initial * math.exp(-anneal_rate * step))


class Relaxed_ELBO(Trace_ELBO):
    """:class:`~pyro.infer.Trace_ELBO` on the relaxed model and guide, with an annealed temperature.

    :param float temperature: initial temperature :math:`\tau_0`.
    :param float temperature_min: the schedule's floor.
    :param float anneal_rate: :math:`r` per optimizer step (see :func:`temperature_at`).
    :param bool straight_through: use straight-through samples.
    Other keyword arguments go to :class:`~pyro.infer.Trace_ELBO`.
    """

    def __init__(self, temperature=1.0, temperature_min=0.5, anneal_rate=1e-4, straight_through=False, **kwargs):
        super().__init__(**kwargs)
        self.schedule = dict(initial=temperature, minimum=temperature_min, anneal_rate=anneal_rate)
        self.straight_through = straight_through
        self.temperature = temperature

    def set_step(self, step):
        """Set the temperature for optimizer step ``step`` (0-based)."""
        self.temperature = temperature_at(step, **self.schedule)

    def _get_trace(self, model, guide, args, kwargs):
        model = relax(model, self.temperature, self.straight_through)
        guide = relax(guide, self.temperature, self.straight_through)
        return super()._get_trace(model, guide, args, kwargs)
