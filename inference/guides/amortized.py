"""The amortized guide: an MLP encoder maps x to a diagonal Gaussian q(z | x)."""

import pyro
from pyro import distributions as dist
from pyrovae.models.plates import data_plate
from torch.nn import functional as F

from pyrovae.local import LocalModule
from pyrovae.nets import default_nets

__all__ = ["AmortizedGuide"]


class AmortizedGuide(LocalModule):
    """q(z | x) = N(mu(x), diag(sigma(x)^2)), with mu and sigma from one MLP encoder
    (Kingma & Welling 2014, arXiv:1312.6114, section 2.4).

    sigma = softplus(raw) + ``min_scale``, which keeps the scale positive without the
    overflow of ``exp`` on long runs.

    :param model: the model; its ``num_pixels`` (P) and ``latent_dim`` (D) fix the shapes.
    :param tuple hidden: encoder hidden layer widths; ``()`` gives a linear encoder.
    :param str activation: hidden-layer activation.
    :param num_data: unused (the encoder serves any number of examples).
    :param nets: the network family that builds the encoder (default: MLPs with ``hidden``).
    :param encoder: the encoder itself, any module (..., P) -> (..., 2D) (loc, then the scale's
        softplus pre-image); overrides ``nets``.
    """

    min_scale = 1e-4

    def __init__(self, model, hidden=(200, 200), activation="tanh", num_data=None, nets=None, encoder=None):
        super().__init__()
        self.latent_dim = model.latent_dim
        nets = default_nets(nets, model.num_pixels, hidden, activation)
        self.encoder = encoder if encoder is not None else nets.encoder(2 * model.latent_dim)

    def encode(self, x):
        """:param x: shape (..., P). :returns: ``(loc, scale)``, each of shape (..., D)."""
        loc, raw = self.encoder(x).split(self.latent_dim, dim=-1)
        return loc, F.softplus(raw) + self.min_scale

    def forward(self, x, idx=None, num_data=None, mask=None):
        """Sample the latent site ``"z"``; same signature as the model (``mask`` is the
        model's; the encoder reads ``x`` as given, so fill missing pixels beforehand)."""
        loc, scale = self.encode(x)  # (B, D)
        with data_plate(x, idx, num_data):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))
