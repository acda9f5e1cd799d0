"""Amortized Gaussian guides with correlated latents: full-covariance and low-rank-plus-diagonal."""

import pyro
import torch
from pyro import distributions as dist
from pyrovae.models.plates import data_plate
from torch.nn import functional as F

from pyrovae.errors import ConfigError
from pyrovae.local import LocalModule
from pyrovae.nets import default_nets

__all__ = ["FullCovarianceGuide", "LowRankGuide"]


class FullCovarianceGuide(LocalModule):
    """q(z | x) = N(mu(x), L(x) L(x)^T) with L lower triangular: a softplus-positive diagonal
    (plus ``min_scale``) and a free strict lower triangle, all from one MLP encoder.

    Shapes: x (B, P); the encoder outputs D + D(D+1)/2 numbers per example; z (B, D).

    :param model: the model; its ``num_pixels`` (P) and ``latent_dim`` (D) fix the shapes.
    :param tuple hidden: encoder hidden layer widths.
    """

    min_scale = 1e-4

    def __init__(self, model, hidden=(200, 200), activation="tanh", num_data=None, nets=None, encoder=None):
        super().__init__()
        D = self.latent_dim = model.latent_dim
        self.register_buffer("rows", torch.tril_indices(D, D)[0], persistent=False)
        self.register_buffer("cols", torch.tril_indices(D, D)[1], persistent=False)
        nets = default_nets(nets, model.num_pixels, hidden, activation)
        self.encoder = encoder if encoder is not None else nets.encoder(D + D * (D + 1) // 2)

    def distribution(self, x):
        """q(z | x) with batch shape (B,) and event shape (D,)."""
        D = self.latent_dim
        out = self.encoder(x)
        loc, entries = out[..., :D], out[..., D:]
        tril = out.new_zeros(*out.shape[:-1], D, D)
        tril[..., self.rows, self.cols] = entries
        diag = F.softplus(tril.diagonal(dim1=-2, dim2=-1)) + self.min_scale
        scale_tril = tril.tril(-1) + torch.diag_embed(diag)
        return dist.MultivariateNormal(loc, scale_tril=scale_tril)

    def forward(self, x, idx=None, num_data=None, mask=None):
        with data_plate(x, idx, num_data):
            pyro.sample("z", self.distribution(x))


class LowRankGuide(FullCovarianceGuide):
    """q(z | x) = N(mu(x), W(x) W(x)^T + diag(d(x))) with W of shape (D, ``rank``): correlations
    at O(D r) cost instead of O(D^2) (``LowRankMultivariateNormal``).

    :param int rank: r, the columns of W.
    """

    def __init__(self, model, hidden=(200, 200), activation="tanh", num_data=None, nets=None, encoder=None,
                 rank=2):
        LocalModule.__init__(self)
        if rank < 1:
            raise ConfigError(f"--guide-options rank must be a positive integer, got {rank}")
        D = self.latent_dim = model.latent_dim
        self.rank = rank
        nets = default_nets(nets, model.num_pixels, hidden, activation)
        self.encoder = encoder if encoder is not None else nets.encoder(2 * D + D * rank)

    def distribution(self, x):
        D = self.latent_dim
        loc, raw, factor = self.encoder(x).split([D, D, D * self.rank], dim=-1)
        cov_diag = (F.softplus(raw) + self.min_scale).pow(2)
        return dist.LowRankMultivariateNormal(loc, factor.reshape(*factor.shape[:-1], D, self.rank), cov_diag)
