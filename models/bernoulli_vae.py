"""The Bernoulli-latent VAE (sigmoid belief network): z in {0, 1}^D with a learned factorized
prior, x | z from a decoder. ``--hidden ''`` gives the linear 784-200 model and ``--hidden
200,200`` the nonlinear 784-200-200-200 model of Mnih & Gregor 2014 (arXiv:1402.0030) and
Yin & Zhou 2019 (ARM, arXiv:1807.11143)."""

import pyro
import torch
from pyro import distributions as dist
from pyro.nn import PyroParam
from pyrovae.models.module import GenerativeModel
from pyrovae.models.plates import data_plate

from pyrovae.local import LocalModule
from pyrovae.nets import default_nets

__all__ = ["BernoulliVAE", "FactorizedBernoulli"]


class FactorizedBernoulli(LocalModule):
    """p(z) = prod_d Bernoulli(sigmoid(b_d)) with learned logits b (D,), starting at 0."""

    def __init__(self, latent_dim):
        super().__init__()
        self.logits = PyroParam(torch.zeros(latent_dim))

    def forward(self):
        """:returns: event shape (D,)."""
        return dist.Bernoulli(logits=self.logits).to_event(1)


class BernoulliVAE(GenerativeModel):
    """z ~ p(z) (D binary units), x | z ~ likelihood(decoder(z)); sites ``"z"`` and ``"x"``.

    Shapes: x (B, P); z (B, D) of 0/1 floats (in [0, 1] when relaxed).
    Its guide is :class:`~pyrovae.inference.guides.bernoulli.BernoulliGuide`. The 2^D
    configurations cannot be enumerated: train with ``tracegraph`` or ``relaxed``.

    :param prior: ignored (the model owns its learned Bernoulli prior).
    :param int latent_dim: D, binary units (200 in the papers above).
    """

    max_plate_nesting = 1
    latent_sites = ("z",)
    discrete_sites = ("z",)
    enumerable = False
    owns_prior = True

    def __init__(self, prior, likelihood, latent_dim, hidden=(), activation="tanh", num_classes=None, nets=None,
                 decoder=None):
        super().__init__()
        self.latent_dim = latent_dim
        self.num_pixels = likelihood.num_pixels
        self.prior = FactorizedBernoulli(latent_dim)
        self.likelihood = likelihood
        nets = default_nets(nets, likelihood.num_pixels, hidden, activation)
        self.decoder = decoder if decoder is not None else nets.decoder(latent_dim, likelihood.num_outputs)

    def forward(self, x=None, idx=None, num_data=None, mask=None):
        with data_plate(x, idx, num_data):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(self.decoder(z), mask), obs=x)

    @torch.no_grad()
    def sample_means(self, num):
        """E[x | z] for ``num`` draws z ~ p(z): (num, P)."""
        return self.likelihood(self.decoder(self.prior().sample((num,)))).mean
