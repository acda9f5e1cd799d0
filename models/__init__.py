"""Generative models p(x, z), priors p(z) and likelihoods p(x | z).

Registry tables, one line per entry:

* :data:`MODELS`: name -> ``Model(prior, likelihood, latent_dim, hidden, activation, num_classes, nets=None,
  **options)``
* :data:`PRIORS`: name -> ``Prior(latent_dim, **options)``
* :data:`LIKELIHOODS`: name -> ``Likelihood(num_pixels, **options)``

Each is a :class:`~pyrovae.registry.Registry`: names also resolve from ``register()``, entry points
and import strings.

A model class may carry these attributes, read by the builder and the trainer:
``discrete_sites`` (names of its discrete latent sites), ``enumerable`` (those sites are marked
for parallel enumeration), ``requires_enum`` (only ``TraceEnum_ELBO`` gives its ELBO),
``owns_prior`` (``--prior`` does not apply), ``semi_supervised`` (some examples observe a label),
``mean_field = False`` (its guide is not mean-field, so ``meanfield``'s per-site KL is refused).
"""

from pyrovae.models.bernoulli_vae import BernoulliVAE
from pyrovae.models.categorical_vae import CategoricalVAE
from pyrovae.models.hierarchical_vae import HierarchicalVAE
from pyrovae.models.likelihoods import LIKELIHOODS
from pyrovae.models.m2 import M2
from pyrovae.models.mixture_vae import MixtureVAE
from pyrovae.models.priors import PRIORS
from pyrovae.models.vae import VAE

from pyrovae.registry import Registry

__all__ = ["MODELS", "PRIORS", "LIKELIHOODS", "VAE", "guide_discrete_sites"]

MODELS = Registry("model", "pyrovae.models", {
    "vae": VAE,  # one Gaussian latent layer, MLP decoder (Kingma & Welling 2014)
    "m2": M2,  # semi-supervised: class y (enumerated or sampled) and z (Kingma et al. 2014)
    "mixture-vae": MixtureVAE,  # Gaussian-mixture prior, component summed by enumeration
    "bernoulli-vae": BernoulliVAE,  # binary latents, sigmoid belief network (Mnih & Gregor 2014)
    "categorical-vae": CategoricalVAE,  # N one-hot K-way latents (Jang et al. 2017)
    "hvae": HierarchicalVAE,  # two Gaussian layers, z2 (D) -> z1 (2D) -> x (Burda et al. 2016)
})


def guide_discrete_sites(model):
    """The discrete latent sites that the guide samples (``discrete_sites`` among
    ``latent_sites``); a mixture VAE's component, summed in the model, is not one."""
    return set(getattr(model, "discrete_sites", ())) & set(model.latent_sites)
