"""The guide of the two-stochastic-layer VAE: q(z1 | x) q(z2 | z1) (Burda et al. 2016, section 5)."""

import pyro
from pyrovae.models.hierarchical_vae import GaussianLayer, layer_widths
from pyrovae.models.plates import data_plate

from pyrovae.local import LocalModule
from pyrovae.nets import default_nets

__all__ = ["HierarchicalGuide"]


class HierarchicalGuide(LocalModule):
    """z1 ~ N(mu(x), sigma(x)) through the ``hidden`` layers, then z2 ~ N(mu(z1), sigma(z1))
    through layers half as wide: the recognition model mirrors the generative one.

    Shapes: x (B, P) -> z1 (B, 2D) -> z2 (B, D).

    :param model: a :class:`~pyrovae.models.hierarchical_vae.HierarchicalVAE`.
    """

    def __init__(self, model, hidden=(200, 200), activation="tanh", num_data=None, nets=None, encoder=None):
        super().__init__()
        bottom, middle = layer_widths(model.latent_dim, hidden)
        nets = default_nets(nets, model.num_pixels, hidden, activation)
        net = encoder if encoder is not None else nets.encoder(2 * bottom)  # (..., P) -> (..., 2 * 2D)
        self.bottom = GaussianLayer(model.num_pixels, tuple(hidden), bottom, activation, net=net)  # q(z1 | x)
        self.top = GaussianLayer(bottom, middle, model.latent_dim, activation)  # q(z2 | z1)

    def forward(self, x, idx=None, num_data=None, mask=None):
        with data_plate(x, idx, num_data):
            z1 = pyro.sample("z1", self.bottom(x))
            pyro.sample("z2", self.top(z1))
