r"""The semi-amortized guide (SA-VAE; Kim, Wiseman, Miller, Sontag & Rush 2018, "Semi-Amortized
Variational Autoencoders", arXiv:1802.02550, algorithm 1).

The encoder proposes (loc, raw scale); ``refine_steps`` steps of gradient ascent on each
example's own ELBO refine them,

.. math:: \lambda_{k+1} = \lambda_k + \eta\, \mathrm{clip}(\nabla_\lambda \mathrm{ELBO}(\lambda_k; x)),

and z is drawn from the refined q. During training the refinement is differentiated
through (``create_graph=True``), so the outer ELBO's gradient reaches the encoder through
every step. The inner ELBO is one reparameterized sample of Pyro's ``Trace_ELBO`` run under
``poutine.block`` (its sites stay out of the outer trace). Per-example gradients are clipped
to norm ``max_grad_norm``, as Kim et al. do, for stability.
"""

import pyro
import pyro.poutine as poutine
import torch
from pyro import distributions as dist
from pyrovae.inference.elbos import local_elbo
from pyrovae.inference.guides.amortized import AmortizedGuide
from pyrovae.models.plates import data_plate
from torch.nn import functional as F

from pyrovae.errors import ConfigError

__all__ = ["SemiAmortizedGuide"]


class SemiAmortizedGuide(AmortizedGuide):
    """SA-VAE guide; the encoder is :class:`AmortizedGuide`'s, with its constructor arguments.

    :param int refine_steps: K, differentiable refinement steps (Kim et al. use up to 20).
    :param float refine_lr: eta.
    :param float max_grad_norm: each refinement step's gradient is clipped to this norm.
    :raises ConfigError: for negative steps or a non-positive rate or norm.
    """

    def __init__(self, model, hidden=(200, 200), activation="tanh", num_data=None, nets=None, encoder=None,
                 refine_steps=5, refine_lr=0.05, max_grad_norm=5.0):
        if refine_steps < 0 or not refine_lr > 0 or not max_grad_norm > 0:
            raise ConfigError(f"--guide-options: refine_steps must be >= 0 and refine_lr, max_grad_norm positive; "
                              f"got {refine_steps}, {refine_lr}, {max_grad_norm}")
        super().__init__(model, hidden, activation, num_data, nets=nets, encoder=encoder)
        self.refine_steps, self.refine_lr, self.max_grad_norm = refine_steps, refine_lr, max_grad_norm
        self._model = [model]  # a reference, not a submodule: its parameters belong to the model

    def refine(self, x, loc, raw):
        """K refinement steps from (loc, raw), each (B, D); returns the refined pair."""
        model = self._model[0]
        site = model.latent_sites[0]
        inner = local_elbo(model)
        train_through = torch.is_grad_enabled() and self.training
        with torch.enable_grad():
            if not train_through:
                loc, raw = loc.detach().requires_grad_(), raw.detach().requires_grad_()
            for _ in range(self.refine_steps):
                def local_guide(x, *args, loc=loc, raw=raw):
                    with data_plate(x):
                        pyro.sample(site, dist.Normal(loc, F.softplus(raw) + self.min_scale).to_event(1))

                with poutine.block():
                    loss = inner.differentiable_loss(model, local_guide, x)
                g_loc, g_raw = torch.autograd.grad(loss, [loc, raw], create_graph=train_through)
                norm = torch.cat([g_loc, g_raw], -1).norm(dim=-1, keepdim=True).clamp(min=1e-12)
                factor = (self.max_grad_norm / norm).clamp(max=1.0)  # per-example clipping
                loc, raw = loc - self.refine_lr * factor * g_loc, raw - self.refine_lr * factor * g_raw
        return (loc, raw) if train_through else (loc.detach(), raw.detach())

    def forward(self, x, idx=None, num_data=None, mask=None):
        loc, raw = self.encoder(x).split(self.latent_dim, dim=-1)  # (B, D) each
        loc, raw = self.refine(x, loc, raw)
        with data_plate(x, idx, num_data):
            pyro.sample(self._model[0].latent_sites[0], dist.Normal(loc, F.softplus(raw) + self.min_scale).to_event(1))
