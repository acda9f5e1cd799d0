"""Observation models p(x | decoder output).

A likelihood is a :class:`~pyro.nn.PyroModule` that says how many decoder outputs it
needs per pixel and turns the decoder output into a distribution with event shape
(P,). It also checks that data lie in its support, so bad data fail before training.
"""

import torch
from pyro import distributions as dist
from pyro.nn import PyroParam
from torch.distributions import constraints
from torch.nn import functional as F

from pyrovae.errors import DataError
from pyrovae.local import LocalModule
from pyrovae.registry import Registry

__all__ = ["BernoulliLikelihood", "GaussianLikelihood", "LIKELIHOODS"]


def _per_pixel(pixel_dist, mask):
    """Independent pixels as one event of shape (P,), optionally masked pixel by pixel."""
    if mask is not None:
        pixel_dist = pixel_dist.mask(mask)
    return pixel_dist.to_event(1)


class BernoulliPixels(dist.Independent):
    """``Bernoulli(logits).to_event(1)`` whose ``log_prob`` sums the pixels' binary cross-entropy
    before negating it: the same value, with one pass over the (..., P) tensor fewer than
    ``Bernoulli.log_prob`` (which negates every pixel's term first). IWAE evaluation spends
    most of its time here: (K x B, P) terms per chunk."""

    def log_prob(self, value):
        logits = self.base_dist.logits
        shape = torch.broadcast_shapes(logits.shape, value.shape)
        terms = F.binary_cross_entropy_with_logits(logits.expand(shape), value.expand(shape), reduction="none")
        return -terms.sum(-1)


class BernoulliLikelihood(LocalModule):
    """x_p ~ Bernoulli(sigmoid(logits_p)) independently over the P pixels; x in {0, 1}^P.

    :param int num_pixels: P.
    """

    binary = True  # data must be binarized (threshold, static or dynamic) before use

    def __init__(self, num_pixels):
        super().__init__()
        self.num_pixels = num_pixels
        self.num_outputs = num_pixels

    def forward(self, logits, mask=None):
        """:param logits: shape (..., P). :param mask: optional bool (..., P), False on pixels
        left out of the likelihood (missing). :returns: a distribution with event shape (P,)."""
        pixels = dist.Bernoulli(logits=logits, validate_args=False)
        return _per_pixel(pixels, mask) if mask is not None else BernoulliPixels(pixels, 1, validate_args=False)

    def output_for_mean(self, mean):
        """The decoder output whose mean is ``mean`` (P,): the log-odds, clamped away from 0 and 1."""
        mean = mean.clamp(1e-3, 1 - 1e-3)
        return torch.log(mean) - torch.log1p(-mean)

    def check_data(self, x, what="data"):
        """:raises DataError: unless every value of ``x`` is 0 or 1."""
        bad = (x != 0) & (x != 1)
        if bad.any():
            raise DataError(
                f"{what} has values other than 0 and 1 (e.g. {x[bad][0].item():.4g}), outside the "
                "Bernoulli likelihood's support; binarize it, or use --likelihood gaussian"
            )


class GaussianLikelihood(LocalModule):
    """x_p ~ Normal(loc_p, sigma_p) independently over pixels, for continuous data.

    :param int num_pixels: P.
    :param float scale: a fixed observation noise sigma; if None, a per-pixel sigma is
        learned (initialised at 1).
    """

    binary = False

    def __init__(self, num_pixels, scale=None):
        super().__init__()
        self.num_pixels = num_pixels
        self.num_outputs = num_pixels
        if scale is None:
            self.scale = PyroParam(torch.ones(num_pixels), constraint=constraints.positive)
        else:
            self.register_buffer("scale", torch.full((num_pixels,), float(scale)))

    def forward(self, loc, mask=None):
        """:param loc: shape (..., P). :param mask: optional bool (..., P), False on pixels
        left out of the likelihood (missing). :returns: a distribution with event shape (P,)."""
        return _per_pixel(dist.Normal(loc, self.scale, validate_args=False), mask)

    def output_for_mean(self, mean):
        """The decoder output whose mean is ``mean`` (P,): the mean itself."""
        return mean

    def check_data(self, x, what="data"):
        """Gaussian data may take any finite value; finiteness is checked by the loader."""


# name -> constructor(num_pixels, **options); open: see pyrovae.registry
LIKELIHOODS = Registry("likelihood", "pyrovae.likelihoods", {
    "bernoulli": BernoulliLikelihood,  # binary pixels (binarized MNIST, digits)
    "gaussian": GaussianLikelihood,  # continuous pixels, learned per-pixel noise
})
