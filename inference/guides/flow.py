"""A per-example normalizing-flow guide: q(z) for one batch of examples, fitted with the model frozen.

q(z_i) pushes N(0, I) through two spline autoregressive transforms (Durkan et al. 2019,
"Neural Spline Flows", arXiv:1906.04032; ``pyro.distributions.transforms.spline_autoregressive``)
with a reversal between them, then a per-example affine map. The autoregressive networks are
shared by the batch, so fit one example per guide when each example needs its own flow.
"""

import pyro
import torch
from pyro import distributions as dist
from pyro.distributions import transforms as T
from pyrovae.models.plates import data_plate
from torch import nn

from pyrovae.local import LocalModule

__all__ = ["FlowGuide"]


class FlowGuide(LocalModule):
    """Spline-flow q(z_i); ``loc`` and ``scale`` (B, D) set the final affine map (start: an
    encoder's output, or zeros and ones)."""

    def __init__(self, loc, scale, site="z", count_bins=8):
        super().__init__()
        D = loc.shape[-1]
        self.site = site
        self.flows = nn.ModuleList([T.spline_autoregressive(D, count_bins=count_bins) for _ in range(2)])
        self.register_buffer("reverse", torch.arange(D - 1, -1, -1))
        self.loc = nn.Parameter(loc.detach().clone())
        self.log_scale = nn.Parameter(scale.detach().clamp(min=1e-4).log().clone())

    def distribution(self):
        """q as a TransformedDistribution with batch shape (B,) and event shape (D,)."""
        base = dist.Normal(torch.zeros_like(self.loc), torch.ones_like(self.loc)).to_event(1)
        affine = T.AffineTransform(self.loc, self.log_scale.exp(), event_dim=1)
        return dist.TransformedDistribution(base, [self.flows[0], T.Permute(self.reverse), self.flows[1], affine])

    def forward(self, x, idx=None, num_data=None, mask=None):
        with data_plate(x, idx, num_data):
            pyro.sample(self.site, self.distribution())
