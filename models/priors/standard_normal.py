"""The standard normal prior p(z) = N(0, I)."""

import torch
from pyro import distributions as dist

from pyrovae.local import LocalModule

__all__ = ["StandardNormal"]


class StandardNormal(LocalModule):
    """p(z) = N(0, I_D), as in Kingma & Welling (2014).

    :param int latent_dim: D.
    """

    def __init__(self, latent_dim):
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self):
        """:returns: a distribution with batch shape () and event shape (D,)."""
        return dist.Normal(self.loc, self.scale).to_event(1)
