r"""Per-example Gaussian variational parameters fitted with the model frozen.

For a batch x (B, P) each example gets its own q(z_i) = N(loc_i, diag(scale_i^2)),
optimized by stochastic gradient ascent on the ELBO (Pyro's ``Trace_ELBO``, vectorized
particles) while every model parameter stays fixed: the per-datapoint variational
inference of Hoffman et al. (2013, "Stochastic Variational Inference", JMLR 14) and,
started at an encoder's output, the refinement "VAE+SVI" of Kim et al. (2018,
"Semi-Amortized Variational Autoencoders", arXiv:1802.02550, section 3).
"""

from contextlib import contextmanager

import pyro
import torch
from pyro import distributions as dist
from pyrovae.inference.elbos import local_elbo
from pyrovae.models.plates import data_plate
from torch import nn
from torch.nn import functional as F

from pyrovae.local import LocalModule
from pyrovae.nets import inverse_softplus

__all__ = ["LocalGaussian", "fit_local", "fit_guide", "frozen"]

MIN_SCALE = 1e-4


class LocalGaussian(LocalModule):
    """q(z_i) = N(loc_i, diag(scale_i^2)) for the B rows of one batch; the model's signature.

    :param torch.Tensor loc: initial locations, shape (B, D).
    :param torch.Tensor scale: initial scales, shape (B, D), positive.
    :param str site: the model's latent site.
    """

    def __init__(self, loc, scale, site="z"):
        super().__init__()
        self.site = site
        self.loc = nn.Parameter(loc.detach().clone())
        self.raw_scale = nn.Parameter(inverse_softplus((scale.detach() - MIN_SCALE).clamp(min=1e-6)))

    @property
    def scale(self):
        return F.softplus(self.raw_scale) + MIN_SCALE

    def forward(self, x, idx=None, num_data=None, mask=None):
        with data_plate(x, idx, num_data):
            pyro.sample(self.site, dist.Normal(self.loc, self.scale).to_event(1))


@contextmanager
def frozen(*modules):
    """Turn off gradients of every parameter of ``modules`` inside the block."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def fit_local(model, x, loc, scale, steps=200, lr=1e-2, num_particles=1, mask=None, record_every=0, record_at=()):
    """Fit per-example Gaussians to ``x`` (B, P) with ``model`` frozen.

    :param loc, scale: initial parameters, shape (B, D): an encoder's output, or zeros and
        ones to start from the prior ("from scratch").
    :param int steps: Adam steps.
    :param mask: optional bool (B, P); only True pixels enter the likelihood.
    :param int record_every: also record the batch-mean ELBO every this many steps (0: never).
    :param record_at: further steps at which to record it (e.g. log-spaced).
    :returns: ``(guide, curve)``: the fitted :class:`LocalGaussian` and a list of
        ``(step, elbo)`` pairs, ELBO in nats per datapoint, each estimated with
        ``max(num_particles, 8)`` particles at the recorded step.
    """
    guide = LocalGaussian(loc, scale, site=model.latent_sites[0]).to(x.device)
    return fit_guide(model, guide, x, steps, lr, num_particles, mask, record_every, record_at)


def fit_guide(model, guide, x, steps=200, lr=1e-2, num_particles=1, mask=None, record_every=0, record_at=()):
    """Maximize the ELBO of ``guide``'s own parameters on ``x`` with ``model`` frozen (Adam
    with its step size annealed to 0 on a cosine over ``steps``, Pyro's ``Trace_ELBO``, or the
    enumerated ELBO for models that sum discrete sites out);
    arguments and return value as in :func:`fit_local`."""
    elbo = local_elbo(model, num_particles=num_particles, vectorize_particles=num_particles > 1)
    recorder = local_elbo(model, num_particles=max(num_particles, 8), vectorize_particles=True)
    record_at = set(record_at)
    optimizer = torch.optim.Adam(guide.parameters(), lr=lr)
    # cosine annealing to 0: large early steps, then noise-free settling at the optimum
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
    curve = []
    with frozen(model):
        for step in range(steps + 1):
            if (record_every and step % record_every == 0) or step in record_at:
                with torch.no_grad():
                    curve.append((step, -recorder.loss(model, guide, x, None, None, mask) / x.shape[0]))
            if step == steps:
                break
            loss = elbo.differentiable_loss(model, guide, x, None, None, mask)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return guide, curve
