"""The VAE with two stochastic layers of Burda, Grosse & Salakhutdinov (2016), section 5.

p(z2) p(z1 | z2) p(x | z1), with z2 the top layer (``latent_dim`` units, 50 in the paper)
and z1 the bottom layer (twice as many, 100). Between x and z1 sit the ``hidden`` layers
(200, 200); between z1 and z2 layers half as wide (100, 100). Every conditional is a
diagonal Gaussian whose mean and log-scale come from an MLP (arXiv:1509.00519, appendix C).
Its guide, :class:`~pyrovae.inference.guides.hierarchical.HierarchicalGuide`, factorizes the
other way: q(z1 | x) q(z2 | z1).
"""

import pyro
import torch
from pyro import distributions as dist
from pyrovae.models.module import GenerativeModel
from pyrovae.models.plates import data_plate
from torch.nn import functional as F

from pyrovae.local import LocalModule
from pyrovae.nets import default_nets, mlp, set_output_bias

__all__ = ["HierarchicalVAE", "GaussianLayer", "layer_widths"]


def layer_widths(latent_dim, hidden):
    """``(bottom, middle)``: the bottom layer's units (2 * latent_dim) and the deterministic
    widths between the two stochastic layers (each hidden width halved)."""
    return 2 * latent_dim, tuple(max(1, h // 2) for h in hidden)


class GaussianLayer(LocalModule):
    """u (..., I) -> Normal(loc(u), softplus(raw(u)) + min_scale) with event shape (O,), both
    halves of one MLP ``[I, *hidden, 2 O]``, or of ``net`` when given."""

    min_scale = 1e-4

    def __init__(self, inputs, hidden, outputs, activation, net=None):
        super().__init__()
        self.outputs = outputs
        self.net = net if net is not None else mlp([inputs, *hidden, 2 * outputs], activation)

    def forward(self, u):
        loc, raw = self.net(u).split(self.outputs, dim=-1)
        return dist.Normal(loc, F.softplus(raw) + self.min_scale).to_event(1)


class HierarchicalVAE(GenerativeModel):
    """z2 ~ N(0, I), z1 | z2 ~ N(mu(z2), sigma(z2)), x | z1 ~ likelihood(decoder(z1)).

    Shapes: x (B, P); z1 (B, 2D); z2 (B, D), with (S, ...) in front under a particle plate.

    :param prior: ignored (the model owns its prior: N(0, I) on z2 and the conditional on z1).
    :param int latent_dim: D, the top layer's units.
    :param tuple hidden: widths between x and z1; halved between z1 and z2.
    """

    max_plate_nesting = 1
    latent_sites = ("z1", "z2")
    owns_prior = True
    mean_field = False  # its guide draws z2 given z1: analytic KL terms per site would be biased

    def __init__(self, prior, likelihood, latent_dim, hidden=(200, 200), activation="tanh", num_classes=None,
                 nets=None, decoder=None):
        super().__init__()
        bottom, middle = layer_widths(latent_dim, hidden)
        self.latent_dim, self.bottom_dim = latent_dim, bottom
        self.num_pixels = likelihood.num_pixels
        self.likelihood = likelihood
        self.register_buffer("top_loc", torch.zeros(latent_dim))
        self.register_buffer("top_scale", torch.ones(latent_dim))
        self.conditional = GaussianLayer(latent_dim, middle, bottom, activation)  # p(z1 | z2)
        nets = default_nets(nets, likelihood.num_pixels, hidden, activation)
        self.x_decoder = decoder if decoder is not None else nets.decoder(bottom, likelihood.num_outputs)  # p(x | z1)

    def top_prior(self):
        return dist.Normal(self.top_loc, self.top_scale).to_event(1)

    @torch.no_grad()
    def initialize_from_data(self, x):
        """Start p(x | z1) at the data's mean pixel values (as :class:`~pyrovae.models.vae.VAE`)."""
        set_output_bias(self.x_decoder, self.likelihood.output_for_mean(x.mean(0)))

    def forward(self, x=None, idx=None, num_data=None, mask=None):
        with data_plate(x, idx, num_data):
            z2 = pyro.sample("z2", self.top_prior())
            z1 = pyro.sample("z1", self.conditional(z2))
            pyro.sample("x", self.likelihood(self.x_decoder(z1), mask), obs=x)

    def decode_mean(self, z1):
        """E[x | z1] for z1 (..., 2D): (..., P)."""
        return self.likelihood(self.x_decoder(z1)).mean

    @torch.no_grad()
    def sample_means(self, num):
        """E[x | z1] for ``num`` ancestral draws z2 ~ p(z2), z1 ~ p(z1 | z2): (num, P)."""
        z1 = self.conditional(self.top_prior().sample((num,))).sample()
        return self.decode_mean(z1)
