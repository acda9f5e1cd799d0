"""A Laplace prior p(z) = prod_d Laplace(z_d; 0, 1): heavier tails, sparser codes than N(0, I)."""

import torch
from pyro import distributions as dist

from pyrovae.local import LocalModule

__all__ = ["Laplace"]


class Laplace(LocalModule):
    """p(z) = prod_d (1/2) exp(-|z_d|). KL terms are Monte Carlo (no closed form with a Gaussian q).

    :param int latent_dim: D.
    """

    def __init__(self, latent_dim):
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self):
        """:returns: a distribution with batch shape () and event shape (D,)."""
        return dist.Laplace(self.loc, self.scale).to_event(1)
