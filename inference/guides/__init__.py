"""Guides q(z | x): one per file, one line each in :data:`GUIDES`.

A guide is a :class:`~pyro.nn.PyroModule` built as ``Guide(model, hidden, activation, num_data)``
with the model's call signature ``(x, idx=None, num_data=None)``, sampling every
latent site of the model inside :func:`pyrovae.models.plates.data_plate`.
"""

from pyrovae.inference.guides.amortized import AmortizedGuide
from pyrovae.inference.guides.per_example import PerExampleGuide
from pyrovae.inference.guides.semi_amortized import SemiAmortizedGuide

__all__ = ["GUIDES", "gaussian_params"]

# name -> constructor(model, hidden, activation, num_data)
GUIDES = {
    "amortized": AmortizedGuide,  # MLP encoder -> diagonal Gaussian
    "per-example": PerExampleGuide,  # a diagonal Gaussian per training example, sparse updates
    "semi-amortized": SemiAmortizedGuide,  # encoder + differentiable refinement (SA-VAE)
}


def gaussian_params(guide, x):
    """loc and scale, each (B, D), of a guide whose q(z | x) is a (diagonal) Normal
    (``guide`` is called as ``guide(x)``).

    :raises ValueError: if the guide's latent site is not Normal-based.
    """
    import pyro.poutine as poutine

    trace = poutine.trace(guide).get_trace(x)
    for site in trace.nodes.values():
        if site["type"] == "sample" and not site["is_observed"] and not type(site["fn"]).__name__ == "_Subsample":
            base = getattr(site["fn"], "base_dist", site["fn"])
            if hasattr(base, "loc") and hasattr(base, "scale"):
                return base.loc.detach(), base.scale.detach()
    raise ValueError("the guide's q(z | x) is not a Normal distribution with loc and scale")
