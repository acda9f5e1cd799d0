"""The amortized inverse-autoregressive-flow guide (Kingma et al. 2016)."""

import pyro
import torch
from pyro import distributions as dist
from pyro.distributions import transforms as T
from pyrovae.models.plates import data_plate
from torch import nn
from torch.nn import functional as F

from pyrovae.errors import ConfigError
from pyrovae.local import LocalModule
from pyrovae.nets import default_nets

__all__ = ["IAFGuide"]


class IAFGuide(LocalModule):
    """q(z | x): z_0 = mu(x) + sigma(x) eps, then ``num_flows`` affine autoregressive steps
    z_t = m_t(z_{t-1}, h(x)) + s_t(z_{t-1}, h(x)) z_{t-1}, conditioned on a context h(x) from the
    same encoder, with reversals between steps (Kingma, Salimans, Jozefowicz, Chen, Sutskever &
    Welling 2016, "Improved Variational Inference with Inverse Autoregressive Flow",
    arXiv:1606.04934, eqs. 10-11; ``pyro.distributions.transforms.conditional_affine_autoregressive``).

    Sampling and the density of a guide's own sample take one pass per step (Pyro caches the
    inverse). Shapes: x (B, P); h (B, ``context_dim``); z (B, D), or (S, B, D) under particles.
    """

    min_scale = 1e-4

    def __init__(self, model, hidden=(200, 200), activation="tanh", num_data=None, nets=None, encoder=None,
                 num_flows=2, context_dim=50):
        super().__init__()
        if num_flows < 1 or context_dim < 1:
            raise ConfigError(f"--guide-options num_flows and context_dim must be positive, got {num_flows} and "
                              f"{context_dim}")
        D = self.latent_dim = model.latent_dim
        self.num_flows, self.context_dim = num_flows, context_dim
        width = hidden[-1] if hidden else 2 * D
        nets = default_nets(nets, model.num_pixels, hidden, activation)
        self.encoder = encoder if encoder is not None else nets.encoder(2 * D + context_dim)
        self.flows = nn.ModuleList([T.conditional_affine_autoregressive(D, context_dim, hidden_dims=[width])
                                    for _ in range(num_flows)])
        self.register_buffer("reverse", torch.arange(D - 1, -1, -1), persistent=False)

    def distribution(self, x):
        """q(z | x) with batch shape (B,) and event shape (D,)."""
        D = self.latent_dim
        loc, raw, context = self.encoder(x).split([D, D, self.context_dim], dim=-1)
        base = dist.Normal(loc, F.softplus(raw) + self.min_scale).to_event(1)
        steps = []
        for i, flow in enumerate(self.flows):
            if i:
                steps.append(T.Permute(self.reverse))
            steps.append(flow.condition(context))
        return dist.TransformedDistribution(base, steps)

    def forward(self, x, idx=None, num_data=None, mask=None):
        with data_plate(x, idx, num_data):
            pyro.sample("z", self.distribution(x))
