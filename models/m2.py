"""The M2 semi-supervised VAE of Kingma, Rezende, Mohamed & Welling (2014), "Semi-supervised
Learning with Deep Generative Models", arXiv:1406.5298, section 2.2: y ~ Cat(pi), z ~ p(z),
x ~ p(x | y, z)."""

import pyro
import torch
from pyro import distributions as dist
from pyrovae.models.plates import data_plate
from pyrovae.models.vae import VAE

from pyrovae.nets import broadcast_cat, default_nets

__all__ = ["M2"]


class M2(VAE):
    """p(y) p(z) p(x | y, z), sites ``"y"`` (one-hot, observed when labelled), ``"z"``, ``"x"``.

    Shapes: x (B, P); y (B, C) one-hot, or (C, 1, C) when enumerated; z (B, D); the decoder
    reads [z, y] broadcast together, (..., D + C).

    Its guide is :class:`~pyrovae.inference.guides.m2.M2Guide`, q(y | x) q(z | x, y).

    :param prior: p(z), a prior module with event shape (D,).
    :param int num_classes: C.
    """

    enumerable = True  # the guide's y can be summed over (10 classes)
    discrete_sites = ("y",)
    latent_sites = ("y", "z")
    semi_supervised = True

    def __init__(self, prior, likelihood, latent_dim, hidden=(200, 200), activation="tanh", num_classes=10,
                 nets=None, decoder=None):
        nets = default_nets(nets, likelihood.num_pixels, hidden, activation)
        if decoder is None:  # p(x | y, z) reads [z, y]
            decoder = nets.decoder(latent_dim + num_classes, likelihood.num_outputs)
        super().__init__(prior, likelihood, latent_dim, hidden, activation, decoder=decoder)
        self.num_classes = num_classes
        self.register_buffer("class_logits", torch.zeros(num_classes))  # a uniform p(y), as in Kingma et al.

    samples_title = "samples E[x | y, z]: column = class y, row = z ~ p(z)"

    @torch.no_grad()
    def sample_means(self, num):
        """E[x | y, z] for ``num`` draws z ~ p(z), y cycling through the classes: (num, P)."""
        y = torch.nn.functional.one_hot(torch.arange(num) % self.num_classes, self.num_classes).float()
        z = self.prior().sample((num,))
        return self.likelihood(self.decoder(torch.cat([z, y.to(z.device)], -1))).mean

    def forward(self, x=None, idx=None, num_data=None, mask=None, y=None):
        """:param y: one-hot labels (B, C) for a labelled batch, or None to treat y as latent."""
        with data_plate(x, idx, num_data):
            y = pyro.sample("y", dist.OneHotCategorical(logits=self.class_logits), obs=y)
            z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(self.decoder(broadcast_cat(z, y)), mask), obs=x)
