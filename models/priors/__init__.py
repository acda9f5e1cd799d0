"""Priors p(z): one per file, one line each in :data:`PRIORS`.

A prior is a :class:`~pyro.nn.PyroModule` built as ``Prior(latent_dim, **options)`` whose
``forward()`` returns a distribution with event shape (latent_dim,). Optional hooks:
``attach(guide, num_pixels)``, called once the guide exists (priors built from the encoder),
and ``initialize_from_data(x)``, called with the training data before the first step.
"""

from pyrovae.models.priors.diagonal import LearnedDiagonal
from pyrovae.models.priors.flow import FlowPrior
from pyrovae.models.priors.laplace import Laplace
from pyrovae.models.priors.mixture import MixtureOfGaussians
from pyrovae.models.priors.standard_normal import StandardNormal
from pyrovae.models.priors.vamp import VampPrior

from pyrovae.registry import Registry

__all__ = ["PRIORS"]

# name -> constructor(latent_dim, **options); open: see pyrovae.registry
PRIORS = Registry("prior", "pyrovae.priors", {
    "standard-normal": StandardNormal,  # N(0, I); analytic KL with Gaussian guides
    "diagonal": LearnedDiagonal,  # N(mu, diag(sigma^2)), learned; analytic KL with Gaussian guides
    "mixture": MixtureOfGaussians,  # learned mixture of 10 diagonal Gaussians
    "vamp": VampPrior,  # mixture of the encoder's posteriors at 500 learned pseudo-inputs
    "flow": FlowPrior,  # N(0, I) through two masked autoregressive layers
    "laplace": Laplace,  # prod_d Laplace(0, 1); the README's worked example of adding a prior
})
