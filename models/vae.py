"""The Gaussian-latent variational autoencoder's generative model.

p(x, z) = p(z) p(x | f(z)), with a swappable prior p(z), an MLP decoder f and a
likelihood object (Kingma & Welling 2014, "Auto-Encoding Variational Bayes",
arXiv:1312.6114).
"""

import pyro
from pyrovae.models.module import GenerativeModel
from pyrovae.models.plates import data_plate

from pyrovae.nets import default_nets

__all__ = ["VAE"]


class VAE(GenerativeModel):
    """Generative model z ~ p(z), x | z ~ likelihood(decoder(z)), one latent site ``"z"``.

    Shapes: x (B, P); z (B, D), or (S, B, D) under a particle plate; decoder output
    (..., likelihood.num_outputs).

    :param prior: a prior module (see :mod:`pyrovae.models.priors`), event shape (D,).
    :param likelihood: a likelihood module (see :mod:`pyrovae.models.likelihoods`).
    :param int latent_dim: D.
    :param tuple hidden: decoder hidden layer widths; ``()`` gives a linear decoder.
    :param str activation: hidden-layer activation.
    :param num_classes: unused (no discrete latents); accepted like every model's.
    :param nets: the network family that builds the decoder (default: an MLP with ``hidden``;
        see :data:`pyrovae.nets.NETS`).
    :param decoder: the decoder itself, any module (..., D) -> (..., likelihood.num_outputs);
        overrides ``nets``.
    """

    max_plate_nesting = 1  # the data plate
    latent_sites = ("z",)

    def __init__(self, prior, likelihood, latent_dim, hidden=(200, 200), activation="tanh", num_classes=None,
                 nets=None, decoder=None):
        super().__init__()
        self.latent_dim = latent_dim
        self.num_pixels = likelihood.num_pixels
        self.prior = prior
        self.likelihood = likelihood
        nets = default_nets(nets, likelihood.num_pixels, hidden, activation)
        self.decoder = decoder if decoder is not None else nets.decoder(latent_dim, likelihood.num_outputs)

    def forward(self, x=None, idx=None, num_data=None, mask=None):
        """Run the model on a batch, or draw one from p(x, z) when ``x`` is None.

        :param torch.Tensor x: observations, shape (B, P); None samples them (then ``num_data``,
            or ``idx``, gives B).
        :param torch.Tensor idx: the batch's indices in the dataset, shape (B,), or None.
        :param int num_data: dataset size, for full-data scaling of minibatch ELBOs.
        :param torch.Tensor mask: optional bool (B, P): only pixels marked True are observed
            (missing-pixel imputation); None observes every pixel.
        """
        with data_plate(x, idx, num_data):
            z = pyro.sample("z", self.prior())  # (B, D) or (S, B, D)
            pyro.sample("x", self.likelihood(self.decoder(z), mask), obs=x)
