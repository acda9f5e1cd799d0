"""The mean-field categorical guide q(y_1..y_N | x) = prod_n Cat(y_n; softmax(f_n(x)))."""

import pyro
from pyro import distributions as dist
from pyrovae.inference.guides.baselines import baseline_net, nvil_baseline
from pyrovae.models.plates import data_plate

from pyrovae.local import LocalModule
from pyrovae.nets import default_nets

__all__ = ["CategoricalGuide"]


class CategoricalGuide(LocalModule):
    """One encoder (B, P) -> logits (B, N, K); each site ``y{n}`` gets NVIL baselines.

    :param model: a :class:`~pyrovae.models.categorical_vae.CategoricalVAE`.
    """

    def __init__(self, model, hidden=(200, 200), activation="tanh", num_data=None, nets=None, encoder=None):
        super().__init__()
        self.sites, self.num_classes = model.latent_sites, model.num_classes
        nets = default_nets(nets, model.num_pixels, hidden, activation)
        self.encoder = encoder if encoder is not None else nets.encoder(len(self.sites) * model.num_classes)
        self.baseline = baseline_net(model.num_pixels)

    def forward(self, x, idx=None, num_data=None, mask=None):
        logits = self.encoder(x).unflatten(-1, (len(self.sites), self.num_classes))  # (B, N, K)
        with data_plate(x, idx, num_data):
            for n, name in enumerate(self.sites):
                pyro.sample(name, dist.OneHotCategorical(logits=logits[..., n, :]),
                            infer={"baseline": nvil_baseline(self.baseline, x)})
