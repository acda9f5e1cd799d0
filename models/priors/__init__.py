"""Priors p(z): one per file, one line each in :data:`PRIORS`.

A prior is a :class:`~pyro.nn.PyroModule` built as ``Prior(latent_dim)`` whose
``forward()`` returns a distribution with event shape (latent_dim,).
"""

from pyrovae.models.priors.mixture import MixtureOfGaussians
from pyrovae.models.priors.standard_normal import StandardNormal

__all__ = ["PRIORS"]

# name -> constructor(latent_dim)
PRIORS = {
    "standard-normal": StandardNormal,  # N(0, I); analytic KL with Gaussian guides
    "mixture": MixtureOfGaussians,  # learned mixture of 10 diagonal Gaussians
}
