"""Splits, datasets and minibatches: the containers every loader returns, and the seeded
orders and binarizations that make a run reproducible and resumable."""

from dataclasses import dataclass

import numpy as np
import torch

from pyrovae.errors import DataError

__all__ = ["Split", "Dataset", "BINARIZE_SEED", "binarize_fixed", "seeded_split", "finish", "batch_indices",
           "binarize_rows", "batches"]

BINARIZE_SEED = 12345  # fixed seed of the one-off binarization of validation/test splits


@dataclass
class Split:
    """One split. ``x``: float32 tensor (N, P) in [0, 1]; ``y``: int64 labels (N,) or None."""

    x: torch.Tensor
    y: torch.Tensor | None = None

    def __len__(self):
        return self.x.shape[0]

    def random_rows(self, num_examples, seed=0):
        """``num_examples`` distinct random row indices (int64, in random order), the same for the
        same seed in every analysis (``evaluate``, ``compare-inference``, ``bdmc``); all rows,
        shuffled, when ``num_examples`` is at least the split's size."""
        return torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:num_examples]


@dataclass
class Dataset:
    """Train/valid/test splits of flattened images.

    :ivar str name: the ``--data`` value it came from.
    :ivar tuple image_shape: (H, W) for figures, or None when P is not a square.
    :ivar str binarization: "none", "threshold", "static" or "dynamic" (see module doc).
    """

    name: str
    train: Split
    valid: Split
    test: Split
    image_shape: tuple | None
    binarization: str

    @property
    def num_pixels(self):
        return self.train.x.shape[1]

    def split(self, name):
        """The split called ``name`` ("train", "valid" or "test")."""
        if name not in ("train", "valid", "test"):
            raise DataError(f"unknown split {name!r}; valid splits: test, train, valid")
        return getattr(self, name)


def binarize_fixed(x, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.bernoulli(x, generator=gen)


def seeded_split(x, y, split_seed, fractions=(0.8, 0.1)):
    n = x.shape[0]
    perm = np.random.default_rng(split_seed).permutation(n)
    n_train, n_valid = int(round(fractions[0] * n)), int(round(fractions[1] * n))
    parts = np.split(perm, [n_train, n_train + n_valid])
    return [Split(torch.as_tensor(x[p]), None if y is None else torch.as_tensor(y[p])) for p in parts]


def finish(name, splits, image_shape, binary, binarization):
    """Apply the binarization policy and build the Dataset."""
    train, valid, test = splits
    if binary and binarization == "dynamic":
        valid = Split(binarize_fixed(valid.x, BINARIZE_SEED), valid.y)
        test = Split(binarize_fixed(test.x, BINARIZE_SEED + 1), test.y)
    if not binary:
        binarization = "none"
    return Dataset(name, train, valid, test, image_shape, binarization)


def batch_indices(n, batch_size, generator, shuffle=True, drop_last=False):
    """Yield the index tensors (B,) of one epoch's minibatches over ``n`` examples."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n - batch_size + 1 if drop_last else n, batch_size):
        yield order[start : start + batch_size]


def binarize_rows(x, generator, keep=None):
    """Draw x' ~ Bernoulli(x) from uniforms U(0, 1) of ``generator``, one per pixel of the
    whole minibatch; ``keep`` (a boolean mask over that minibatch's rows) selects the rows of
    ``x``, so a process holding part of the batch draws exactly what the whole batch gets."""
    rows = x.shape[0] if keep is None else keep.shape[0]
    u = torch.rand((rows,) + tuple(x.shape[1:]), generator=generator)
    return (u if keep is None else u[keep]).lt(x).to(x.dtype)


def batches(split, batch_size, generator, binarize=False, shuffle=True, drop_last=False):
    """Yield minibatches ``(x, idx)`` of shapes (B, P) and (B,) over one epoch.

    :param torch.Generator generator: drives the shuffling and dynamic binarization, so
        saving its state makes the data order resumable.
    :param bool binarize: draw x ~ Bernoulli(intensity) (dynamic binarization).
    :param bool drop_last: skip the final smaller batch (estimators whose baselines keep a
        running average per batch position need one batch shape).
    """
    for idx in batch_indices(len(split), batch_size, generator, shuffle, drop_last):
        x = split.x[idx]
        yield (binarize_rows(x, generator) if binarize else x), idx
