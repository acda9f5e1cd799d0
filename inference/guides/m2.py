"""The M2 guide q(y | x) q(z | x, y) (Kingma et al. 2014, arXiv:1406.5298, eq. 4)."""

import pyro
from pyro import distributions as dist
from pyrovae.inference.guides.baselines import baseline_net, nvil_baseline
from pyrovae.models.plates import data_plate
from torch.nn import functional as F

from pyrovae.local import LocalModule
from pyrovae.nets import broadcast_cat, default_nets

__all__ = ["M2Guide"]


class M2Guide(LocalModule):
    """A classifier q(y | x) = Cat(softmax(g(x))) and a Gaussian encoder q(z | x, y) that reads
    [x, y] broadcast together, so an enumerated y of shape (C, 1, C) gives z of shape (C, B, D).

    With a labelled batch (``y`` given) only z is sampled. ``--elbo enum`` enumerates ``"y"``
    (sums over classes); the site carries NVIL baselines for ``TraceGraph_ELBO``.

    :param model: an :class:`~pyrovae.models.m2.M2`.
    :param tuple hidden: hidden widths of the classifier and the encoder.
    """

    min_scale = 1e-4

    def __init__(self, model, hidden=(200, 200), activation="tanh", num_data=None, nets=None, encoder=None,
                 classifier=None):
        super().__init__()
        P, C, D = model.num_pixels, model.num_classes, model.latent_dim
        self.latent_dim = D
        nets = default_nets(nets, P, hidden, activation)
        self.classifier = classifier if classifier is not None else nets.encoder(C)  # (..., P) -> (..., C)
        self.encoder = encoder if encoder is not None else nets.encoder(2 * D, extra_features=C)  # [x, y]
        self.baseline = baseline_net(P)

    def classify(self, x):
        """:param x: (B, P). :returns: class logits (B, C)."""
        return self.classifier(x)

    def forward(self, x, idx=None, num_data=None, mask=None, y=None):
        with data_plate(x, idx, num_data):
            if y is None:
                y = pyro.sample("y", dist.OneHotCategorical(logits=self.classify(x)),
                                infer={"baseline": nvil_baseline(self.baseline, x)})
            loc, raw = self.encoder(broadcast_cat(x, y)).split(self.latent_dim, dim=-1)
            pyro.sample("z", dist.Normal(loc, F.softplus(raw) + self.min_scale).to_event(1))
