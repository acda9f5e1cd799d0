"""Guides q(z | x): one per file, one line each in :data:`GUIDES`.

A guide is a :class:`~pyro.nn.PyroModule` built as ``Guide(model, hidden, activation)``
with the model's call signature ``(x, idx=None, num_data=None)``, sampling every
latent site of the model inside :func:`pyrovae.models.plates.data_plate`.
"""

from pyrovae.inference.guides.amortized import AmortizedGuide

__all__ = ["GUIDES"]

# name -> constructor(model, hidden, activation)
GUIDES = {
    "amortized": AmortizedGuide,  # MLP encoder -> diagonal Gaussian
}
