"""A learned mixture-of-Gaussians prior p(z) = sum_c pi_c N(z; mu_c, diag(sigma_c^2))."""

import torch
from pyro import distributions as dist
from pyro.nn import PyroParam
from torch.distributions import constraints

from pyrovae.errors import ConfigError
from pyrovae.local import LocalModule

__all__ = ["MixtureOfGaussians"]


class MixtureOfGaussians(LocalModule):
    """p(z) = sum_c pi_c N(mu_c, diag(sigma_c^2)) with learned weights, means and scales
    (the Gaussian-mixture prior of Dilokthanakul et al. 2016, arXiv:1611.02648, and
    Jiang et al. 2017, arXiv:1611.05148).

    Means start at N(0, I) draws (from the global RNG, so ``--seed`` fixes them), scales at 1,
    weights uniform.

    :param int latent_dim: D.
    :param int num_components: C.
    """

    def __init__(self, latent_dim, num_components=10):
        super().__init__()
        if num_components < 1:
            raise ConfigError(f"--prior-options num_components must be a positive integer, got {num_components}")
        self.num_components = num_components
        self.logits = PyroParam(torch.zeros(num_components))
        self.locs = PyroParam(torch.randn(num_components, latent_dim))
        self.scales = PyroParam(torch.ones(num_components, latent_dim), constraint=constraints.positive)

    def mixing(self):
        """:returns: Categorical(pi), batch shape (), C categories."""
        return dist.Categorical(logits=self.logits)

    def component(self, c):
        """:param c: component indices, any shape. :returns: N(mu_c, sigma_c), event shape (D,)."""
        return dist.Normal(self.locs[c], self.scales[c]).to_event(1)

    def forward(self):
        """:returns: the marginal p(z), batch shape () and event shape (D,)."""
        return dist.MixtureSameFamily(self.mixing(), dist.Normal(self.locs, self.scales).to_event(1))
