"""Components written as a user would, outside pyrovae's packages, with plain PyroModule:
``conftest.py`` registers them, so the contract test runs them with every model, ELBO and
likelihood like the built-in ones."""

import pyro
import torch
from pyro import distributions as dist
from pyro.nn import PyroModule
from pyrovae.models.plates import data_plate
from torch.nn import functional as F

from pyrovae.nets import default_nets


class StudentT(PyroModule):
    """p(z) = prod_d StudentT(z_d; df, 0, 1)."""

    def __init__(self, latent_dim, df=5.0):
        super().__init__()
        self.register_buffer("df", torch.full((latent_dim,), float(df)))

    def forward(self):
        return dist.StudentT(self.df, torch.zeros_like(self.df), torch.ones_like(self.df)).to_event(1)


class LaplaceGuide(PyroModule):
    """q(z | x) = prod_d Laplace(z_d; mu_d(x), b_d(x)) from one encoder of the network family."""

    def __init__(self, model, hidden=(200, 200), activation="tanh", num_data=None, nets=None):
        super().__init__()
        self.latent_dim = model.latent_dim
        self.encoder = default_nets(nets, model.num_pixels, hidden, activation).encoder(2 * model.latent_dim)

    def forward(self, x, idx=None, num_data=None, mask=None):
        loc, raw = self.encoder(x).split(self.latent_dim, dim=-1)
        with data_plate(x, idx, num_data):
            pyro.sample("z", dist.Laplace(loc, F.softplus(raw) + 1e-4).to_event(1))
