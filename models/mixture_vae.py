"""The mixture-prior VAE: a component c ~ Cat(pi) per datapoint, z | c ~ N(mu_c, sigma_c),
x | z from the decoder; c is summed out by enumeration (Jiang et al. 2017, "Variational Deep
Embedding", arXiv:1611.05148; Dilokthanakul et al. 2016, arXiv:1611.02648)."""

import pyro
import torch
from pyrovae.models.plates import data_plate
from pyrovae.models.priors.mixture import MixtureOfGaussians
from pyrovae.models.vae import VAE

__all__ = ["MixtureVAE"]


class MixtureVAE(VAE):
    """p(c) p(z | c) p(x | z) with sites ``"c"`` (enumerated), ``"z"`` and ``"x"``.

    The guide is any Gaussian guide of z alone (:data:`pyrovae.inference.guides.GUIDES`):
    ``TraceEnum_ELBO`` sums c out exactly, and ``self.prior()`` is the marginal p(z) (used to
    generate). Other estimators would sample c from the prior without a guide term, which is
    not an ELBO, so the model asks for ``--elbo enum``.

    Shapes: x (B, P); c (B,), or (C, 1) when enumerated; z (B, D).

    :param prior: ignored unless a :class:`MixtureOfGaussians` (the model owns its prior).
    :param int num_classes: C, the number of components.
    """

    enumerable = True  # c is marked for parallel enumeration in the model
    discrete_sites = ("c",)
    requires_enum = True
    owns_prior = True

    def __init__(self, prior, likelihood, latent_dim, hidden=(200, 200), activation="tanh", num_classes=10,
                 nets=None, decoder=None):
        if not isinstance(prior, MixtureOfGaussians):
            prior = MixtureOfGaussians(latent_dim, num_classes)
        super().__init__(prior, likelihood, latent_dim, hidden, activation, nets=nets, decoder=decoder)
        self.num_classes = prior.num_components

    def forward(self, x=None, idx=None, num_data=None, mask=None):
        with data_plate(x, idx, num_data):
            c = pyro.sample("c", self.prior.mixing(), infer={"enumerate": "parallel"})
            z = pyro.sample("z", self.prior.component(c))
            pyro.sample("x", self.likelihood(self.decoder(z), mask), obs=x)

    @torch.no_grad()
    def assign(self, z):
        """The most probable component for each latent: argmax_c p(c | z).

        :param z: shape (N, D). :returns: int64 tensor (N,).
        """
        prior = self.prior
        log_joint = prior.mixing().logits + prior.component(torch.arange(self.num_classes)).log_prob(z.unsqueeze(-2))
        return log_joint.argmax(-1)
