"""The per-example (non-amortized) guide: its own Gaussian parameters for every training example.

q(z_i) = N(loc_i, diag(scale_i^2)) for i = 1..N, as in stochastic variational inference
(Hoffman, Blei, Wang & Paisley 2013, JMLR 14). The parameters live in two sparse embedding
tables of shape (N, D); a minibatch reads the rows ``idx`` of the data plate, and its
gradient is a sparse tensor holding only those rows, so ``torch.optim.SparseAdam`` (see
:mod:`pyrovae.training.optim`) updates them and leaves every other row bit-for-bit unchanged. Dense
Adam would move all N rows through its momentum at every step.

Memory: 2 N D floats for the parameters, plus 4 N D for SparseAdam's moments; for N = 50,000
and D = 50 that is 20 MB and 40 MB in float32. A step touches B rows, never the whole table.
"""

import pyro
import torch
from pyro import distributions as dist
from pyrovae.models.plates import data_plate
from torch import nn
from torch.nn import functional as F

from pyrovae.errors import ConfigError
from pyrovae.local import LocalModule
from pyrovae.nets import inverse_softplus

__all__ = ["PerExampleGuide"]


class PerExampleGuide(LocalModule):
    """q(z_i) with one row of (loc, scale) per training example; starts at the prior N(0, I).

    :param model: the model; its ``latent_dim`` (D) fixes the table width.
    :param num_data: N, the number of training examples.
    :param bool sparse: sparse gradients (only the batch's rows), for ``torch.optim.SparseAdam``
        (pyrovae's loop, :func:`pyrovae.training.optim.make_optimizers`). ``False`` gives dense gradients,
        for optimizers without sparse support such as stock ``SVI`` + ``pyro.optim.Adam``, which
        then moves every row through its momentum at every step.
    """

    min_scale = 1e-4
    local_tables = ("loc", "raw_scale")  # sparse parameters, updated row by row

    def __init__(self, model, hidden=None, activation=None, num_data=None, sparse=True):
        super().__init__()
        if not num_data:
            raise ConfigError("the per-example guide needs num_data, the number of training examples")
        D = model.latent_dim
        self.site = model.latent_sites[0]
        self.num_data = num_data
        self.loc = nn.Embedding(num_data, D, sparse=sparse)
        self.raw_scale = nn.Embedding(num_data, D, sparse=sparse)
        with torch.no_grad():
            self.loc.weight.zero_()
            self.raw_scale.weight.fill_(float(inverse_softplus(torch.tensor(1.0 - self.min_scale))))

    def forward(self, x, idx=None, num_data=None, mask=None):
        """Sample ``z`` for the rows ``idx`` (B,) of the table; ``idx=None`` means all N rows."""
        if idx is None:
            if x.shape[0] != self.num_data:
                raise ConfigError(
                    f"the per-example guide holds parameters for {self.num_data} training examples; pass idx "
                    f"for a batch of {x.shape[0]}, or fit new data with pyrovae.inference.local_fit"
                )
            idx = torch.arange(self.num_data, device=x.device)
            num_data = None
        loc = self.loc(idx)  # (B, D), sparse gradient
        scale = F.softplus(self.raw_scale(idx)) + self.min_scale
        with data_plate(x, idx, num_data or self.num_data):
            pyro.sample(self.site, dist.Normal(loc, scale).to_event(1))
