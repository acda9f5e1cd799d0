"""The categorical-latent VAE of Jang, Gu & Poole 2017 ("Categorical Reparameterization with
Gumbel-Softmax", arXiv:1611.01144, section 4.2): N independent K-way latents with uniform
priors, x | y_1..y_N from a decoder that reads their one-hot codes."""

import math

import pyro
import torch
from pyro import distributions as dist
from pyrovae.models.module import GenerativeModel
from pyrovae.models.plates import data_plate

from pyrovae.nets import broadcast_cat, default_nets

__all__ = ["CategoricalVAE", "MAX_ENUMERATED"]

MAX_ENUMERATED = 1000  # the most joint configurations K^N that are summed out by enumeration


class CategoricalVAE(GenerativeModel):
    """Sites ``"y0" .. "y{N-1}"`` (one-hot, each (B, K), or enumerated (K, 1, ..., K)) and ``"x"``.

    Where K^N <= :data:`MAX_ENUMERATED` (one or two 10-way latents) the model is ``enumerable``:
    ``--elbo enum`` trains by exact sums and the evaluator sums them too.
    Jang et al.'s 20 x 10 model is trained with ``tracegraph`` or ``relaxed``.

    :param prior: ignored (uniform priors).
    :param int latent_dim: N, the number of categorical latents.
    :param int num_classes: K, categories per latent.
    """

    max_plate_nesting = 1
    owns_prior = True

    def __init__(self, prior, likelihood, latent_dim, hidden=(200, 200), activation="tanh", num_classes=10,
                 nets=None, decoder=None):
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.num_pixels = likelihood.num_pixels
        self.likelihood = likelihood
        self.discrete_sites = self.latent_sites = tuple(f"y{n}" for n in range(latent_dim))
        self.enumerable = latent_dim * math.log(num_classes) <= math.log(MAX_ENUMERATED) + 1e-9
        self.register_buffer("class_logits", torch.zeros(num_classes))
        nets = default_nets(nets, likelihood.num_pixels, hidden, activation)
        if decoder is None:  # p(x | y) reads the N one-hot codes side by side
            decoder = nets.decoder(latent_dim * num_classes, likelihood.num_outputs)
        self.decoder = decoder

    def forward(self, x=None, idx=None, num_data=None, mask=None):
        with data_plate(x, idx, num_data):
            codes = [pyro.sample(name, dist.OneHotCategorical(logits=self.class_logits)) for name in self.latent_sites]
            pyro.sample("x", self.likelihood(self.decoder(broadcast_cat(*codes)), mask), obs=x)

    @torch.no_grad()
    def sample_means(self, num):
        """E[x | y] for ``num`` draws of the N latents from the prior: (num, P)."""
        prior = dist.OneHotCategorical(logits=self.class_logits)
        codes = prior.sample((num, self.latent_dim)).reshape(num, -1)
        return self.likelihood(self.decoder(codes)).mean
