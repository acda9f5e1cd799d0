"""A normalizing-flow prior: N(0, I) pushed through learned autoregressive transforms."""

import torch
from pyro import distributions as dist
from pyro.distributions import transforms as T
from torch import nn

from pyrovae.errors import ConfigError
from pyrovae.local import LocalModule

__all__ = ["FlowPrior"]


class FlowPrior(LocalModule):
    """p(z) = N(u; 0, I) |det du/dz| with u = f(z), f two affine autoregressive layers with a
    reversal between them (a masked autoregressive flow, Papamakarios et al. 2017,
    arXiv:1705.07057; ``pyro.distributions.transforms.affine_autoregressive``).

    The density of z, which the ELBO needs for every guide sample, is one pass of the
    autoregressive networks; sampling z ~ p(z) (figures only) inverts them, D passes.

    :param int latent_dim: D (at least 2).
    :param int num_flows: autoregressive layers.
    """

    def __init__(self, latent_dim, num_flows=2):
        super().__init__()
        if num_flows < 1:
            raise ConfigError(f"--prior-options num_flows must be a positive integer, got {num_flows}")
        self.flows = nn.ModuleList([T.affine_autoregressive(latent_dim) for _ in range(num_flows)])
        self.register_buffer("reverse", torch.arange(latent_dim - 1, -1, -1))
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self):
        """:returns: a distribution with batch shape () and event shape (D,)."""
        layers = []
        for i, flow in enumerate(self.flows):
            if i:
                layers.append(T.Permute(self.reverse))
            layers.append(flow)
        # z = f^{-1}(u): the inverse of the chain u = f(z), so log_prob runs the networks forward
        return dist.TransformedDistribution(dist.Normal(self.loc, self.scale).to_event(1),
                                            [T.ComposeTransform(layers).inv])
