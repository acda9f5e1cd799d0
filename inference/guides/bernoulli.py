"""The Bernoulli guide q(z | x) = prod_d Bernoulli(sigmoid(f_d(x))) for binary latents."""

import pyro
from pyro import distributions as dist
from pyrovae.inference.guides.baselines import baseline_net, nvil_baseline
from pyrovae.models.plates import data_plate

from pyrovae.local import LocalModule
from pyrovae.nets import default_nets

__all__ = ["BernoulliGuide"]


class BernoulliGuide(LocalModule):
    """A factorized Bernoulli encoder, (B, P) -> logits (B, D), with NVIL baselines on its site
    (Mnih & Gregor 2014, arXiv:1402.0030).

    :param model: a model with ``num_pixels`` (P) and ``latent_dim`` (D).
    :param tuple hidden: encoder hidden widths; ``()`` is the linear encoder.
    """

    def __init__(self, model, hidden=(), activation="tanh", num_data=None, nets=None, encoder=None):
        super().__init__()
        nets = default_nets(nets, model.num_pixels, hidden, activation)
        self.encoder = encoder if encoder is not None else nets.encoder(model.latent_dim)
        self.baseline = baseline_net(model.num_pixels)

    def forward(self, x, idx=None, num_data=None, mask=None):
        with data_plate(x, idx, num_data):
            pyro.sample("z", dist.Bernoulli(logits=self.encoder(x)).to_event(1),
                        infer={"baseline": nvil_baseline(self.baseline, x)})
