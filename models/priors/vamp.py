"""The VampPrior: a mixture of the encoder's posteriors at learned pseudo-inputs."""

import torch
from pyrovae.models.priors.diagonal_mixture import diagonal_mixture
from torch import nn

from pyrovae.errors import ConfigError
from pyrovae.local import LocalModule

__all__ = ["VampPrior"]


class VampPrior(LocalModule):
    """p(z) = (1/K) sum_k q(z | u_k), with K learned pseudo-inputs u_k in [0, 1]^P and q the
    guide's own encoder (Tomczak & Welling 2018, "VAE with a VampPrior", arXiv:1705.07120,
    eq. 9; K = 500 and the hard-tanh to [0, 1] as in their MNIST experiments).

    The prior needs the guide: :func:`pyrovae.build.build_model_and_guide` calls
    :meth:`attach` once both exist. Pseudo-inputs start at random training images
    (:meth:`initialize_from_data`, called before training) or, without data, at uniform noise.
    The encoder's parameters receive gradients through the prior term of the ELBO.

    :param int latent_dim: D.
    :param int num_components: K.
    """

    def __init__(self, latent_dim, num_components=500):
        super().__init__()
        self.latent_dim = latent_dim
        if num_components < 1:
            raise ConfigError(f"--prior-options num_components must be a positive integer, got {num_components}")
        self.num_components = num_components
        self.pseudo_inputs = None

    def attach(self, guide, num_pixels):
        """Use ``guide.encode`` (x (..., P) -> loc, scale (..., D)) as q.

        :raises ConfigError: if the guide has no encoder (per-example guides, other models' guides).
        """
        if not callable(getattr(guide, "encode", None)):
            raise ConfigError(f"--prior vamp mixes the encoder's posteriors, and guide {type(guide).__name__} "
                              "has no encoder; use --guide amortized or semi-amortized")
        object.__setattr__(self, "_encode", guide.encode)  # a reference, not a submodule: no duplicate state
        self.pseudo_inputs = nn.Parameter(torch.rand(self.num_components, num_pixels))

    @torch.no_grad()
    def initialize_from_data(self, x):
        """Pseudo-inputs at K random rows of the training data x (N, P) (the global RNG)."""
        rows = torch.randint(len(x), (self.num_components,))
        self.pseudo_inputs.copy_(x[rows].to(self.pseudo_inputs))

    def forward(self):
        """:returns: a distribution with batch shape () and event shape (D,).
        :raises ConfigError: before :meth:`attach`."""
        if self.pseudo_inputs is None:
            raise ConfigError("the VampPrior has no encoder yet; build it with build_model_and_guide")
        loc, scale = self._encode(self.pseudo_inputs.clamp(0, 1))  # (K, D) each
        return diagonal_mixture(loc.new_zeros(self.num_components), loc, scale)
