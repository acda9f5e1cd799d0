"""Generative models p(x, z), priors p(z) and likelihoods p(x | z).

Registry tables, one line per entry:

* :data:`MODELS`: name -> ``Model(prior, likelihood, latent_dim, hidden, activation)``
* :data:`PRIORS`: name -> ``Prior(latent_dim)``
* :data:`LIKELIHOODS`: name -> ``Likelihood(num_pixels)``
"""

from pyrovae.models.likelihoods import LIKELIHOODS
from pyrovae.models.priors import PRIORS
from pyrovae.models.vae import VAE

__all__ = ["MODELS", "PRIORS", "LIKELIHOODS", "VAE"]

MODELS = {
    "vae": VAE,  # one Gaussian latent layer, MLP decoder (Kingma & Welling 2014)
}
