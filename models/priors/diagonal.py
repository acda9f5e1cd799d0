"""A learned diagonal Gaussian prior p(z) = N(mu, diag(sigma^2))."""

import torch
from pyro import distributions as dist
from pyro.nn import PyroParam
from torch.distributions import constraints

from pyrovae.local import LocalModule

__all__ = ["LearnedDiagonal"]


class LearnedDiagonal(LocalModule):
    """p(z) = N(mu, diag(sigma^2)) with mu and sigma learned by the ELBO (empirical Bayes on the
    prior's location and scale); starts at N(0, I), so it begins as the standard prior.

    :param int latent_dim: D.
    """

    def __init__(self, latent_dim):
        super().__init__()
        self.loc = PyroParam(torch.zeros(latent_dim))
        self.scale = PyroParam(torch.ones(latent_dim), constraint=constraints.positive)

    def forward(self):
        """:returns: a distribution with batch shape () and event shape (D,)."""
        return dist.Normal(self.loc, self.scale).to_event(1)
