"""The data plate shared by every model and guide.

Models and guides must agree on the plate's name and size, so both call
:func:`data_plate`. With ``idx`` given, the plate subsamples a dataset of
``num_data`` examples and Pyro scales log-probabilities by ``num_data / len(idx)``,
so a minibatch ELBO estimates the full-data ELBO; per-example guides read ``idx``
to pick their rows. With ``idx=None`` the batch ``x`` is the whole dataset.
"""

import pyro

from pyrovae.errors import ConfigError

__all__ = ["DATA_PLATE", "data_plate"]

DATA_PLATE = "data"


def data_plate(x, idx=None, num_data=None):
    """Return ``pyro.plate("data", ...)`` for the batch ``x`` of shape (B, P).

    :param torch.Tensor x: the batch, shape (B, P); or None when the model samples x (prior
        predictive), and then B is ``len(idx)``, or ``num_data`` without ``idx``.
    :param torch.Tensor idx: indices of the batch in the dataset, shape (B,), or None.
    :param int num_data: size of the dataset ``idx`` indexes; defaults to B.
    :raises ConfigError: if ``idx`` does not have one index per row of ``x``, or
        ``num_data`` differs from B without ``idx``, or neither gives B for ``x=None``.
    """
    if x is None:
        if idx is None and num_data is None:
            raise ConfigError("without data, the model needs the number of examples to draw: call it as "
                              "model(None, num_data=B)")
        batch = num_data if idx is None else len(idx)
    else:
        batch = x.shape[0]
    if idx is None:
        if num_data not in (None, batch):
            raise ConfigError(f"num_data={num_data} needs idx, the batch's indices into the dataset")
        return pyro.plate(DATA_PLATE, batch, dim=-1)
    if idx.shape != (batch,):
        raise ConfigError(f"idx must have shape ({batch},) to match x, got {tuple(idx.shape)}")
    return pyro.plate(DATA_PLATE, num_data or batch, subsample=idx, dim=-1)
