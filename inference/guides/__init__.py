"""Guides q(z | x): one per file, one line each in :data:`GUIDES`.

A guide is a :class:`~pyro.nn.PyroModule` built as ``Guide(model, hidden, activation, num_data, nets=None, **options)``
with the model's call signature ``(x, idx=None, num_data=None)``, sampling every
latent site of the model inside :func:`pyrovae.models.plates.data_plate`.
"""

from pyrovae.inference.guides.amortized import AmortizedGuide
from pyrovae.inference.guides.bernoulli import BernoulliGuide
from pyrovae.inference.guides.categorical import CategoricalGuide
from pyrovae.inference.guides.full_covariance import FullCovarianceGuide, LowRankGuide
from pyrovae.inference.guides.hierarchical import HierarchicalGuide
from pyrovae.inference.guides.iaf import IAFGuide
from pyrovae.inference.guides.m2 import M2Guide
from pyrovae.inference.guides.per_example import PerExampleGuide
from pyrovae.inference.guides.semi_amortized import SemiAmortizedGuide

from pyrovae.registry import Registry

__all__ = ["GUIDES", "MODEL_GUIDES", "guides_for", "gaussian_params"]

# name -> constructor(model, hidden, activation, num_data, nets=None, **options); open: see pyrovae.registry
GUIDES = Registry("guide", "pyrovae.guides", {
    "amortized": AmortizedGuide,  # MLP encoder -> diagonal Gaussian
    "per-example": PerExampleGuide,  # a diagonal Gaussian per training example, sparse updates
    "semi-amortized": SemiAmortizedGuide,  # encoder + differentiable refinement (SA-VAE)
    "full-covariance": FullCovarianceGuide,  # MLP encoder -> N(mu, L L^T)
    "low-rank": LowRankGuide,  # MLP encoder -> N(mu, W W^T + diag), rank 2
    "iaf": IAFGuide,  # diagonal Gaussian + 2 conditional affine autoregressive steps
})

# model name -> its own guide table, for models whose latents are not one Gaussian site
MODEL_GUIDES = {
    "m2": Registry("guide", "pyrovae.guides", {"amortized": M2Guide}),  # q(y | x) q(z | x, y)
    "bernoulli-vae": Registry("guide", "pyrovae.guides", {"amortized": BernoulliGuide}),  # factorized Bernoulli encoder
    "categorical-vae": Registry("guide", "pyrovae.guides", {"amortized": CategoricalGuide}),  # mean-field categorical
    "hvae": Registry("guide", "pyrovae.guides", {"amortized": HierarchicalGuide}),  # q(z1 | x) q(z2 | z1)
}


def guides_for(model_name):
    """The guide table that applies to the model called ``model_name``."""
    return MODEL_GUIDES.get(model_name, GUIDES)


def gaussian_params(guide, x):
    """loc and scale, each (B, D), of a guide whose q(z | x) is a (diagonal) Normal
    (``guide`` is called as ``guide(x)``).

    :raises ValueError: if the guide's latent site is not Normal-based.
    """
    import pyro.poutine as poutine
    from pyro.poutine.util import prune_subsample_sites

    trace = prune_subsample_sites(poutine.trace(guide).get_trace(x))
    for site in trace.nodes.values():
        if site["type"] == "sample" and not site["is_observed"]:
            base = getattr(site["fn"], "base_dist", site["fn"])
            if hasattr(base, "loc") and hasattr(base, "scale"):
                return base.loc.detach(), base.scale.detach()
    raise ValueError("the guide's q(z | x) is not a Normal distribution with loc and scale")
