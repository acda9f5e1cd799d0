"""Datasets, each a name for ``--data``.

==================  ==========================================================================
name                source
==================  ==========================================================================
digits (default)    scikit-learn's bundled 8x8 digits (1,797 images, labels), no download
binarized-mnist     ``binarized_mnist_{train,valid,test}.amat[.gz]`` (Larochelle & Murray 2011)
mnist               IDX files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``
fashion-mnist       the same IDX file names, from Fashion-MNIST
PATH.npy / .npz     your own array, N x P (or N x H x W), values in [0, 1]
==================  ==========================================================================

Binarization for the Bernoulli likelihood (``Dataset.binarization``):

* ``threshold`` (digits): pixel intensities are scaled to [0, 1] (divided by 16) and
  thresholded at 0.5, a fixed binary dataset.
* ``static`` (binarized-mnist): the files are already binary.
* ``dynamic`` (mnist, fashion-mnist, non-binary arrays): training batches are drawn as
  x ~ Bernoulli(intensity) afresh each time (Salakhutdinov & Murray 2008); the
  validation and test splits are binarized once with a fixed seed so that evaluation
  is reproducible.

Splits: digits and user arrays are split 80/10/10 by a seeded permutation
(``split_seed``); MNIST-style data keep the last 10,000 training images as validation.
No function here downloads anything.
"""

import gzip
import os
import struct
from dataclasses import dataclass

import numpy as np
import torch

from pyrovae.errors import DataError

__all__ = ["Split", "Dataset", "DATASETS", "load_dataset", "batches", "batch_indices", "binarize_rows"]

BINARIZE_SEED = 12345  # fixed seed of the one-off binarization of validation/test splits


@dataclass
class Split:
    """One split. ``x``: float32 tensor (N, P) in [0, 1]; ``y``: int64 labels (N,) or None."""

    x: torch.Tensor
    y: torch.Tensor | None = None

    def __len__(self):
        return self.x.shape[0]


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


def _open(path):
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _find(data_dir, stem, dataset):
    """The path of ``stem`` or ``stem.gz`` in ``data_dir``; a clear error if neither exists."""
    if data_dir is None:
        raise DataError(f"--data {dataset} reads local files: pass --data-dir DIR holding {stem}[.gz]")
    for name in (stem, stem + ".gz"):
        path = os.path.join(data_dir, name)
        if os.path.isfile(path):
            return path
    raise DataError(f"--data {dataset}: expected {stem} or {stem}.gz in {os.path.abspath(data_dir)}; not found")


def _read_amat(path):
    try:
        with _open(path) as f:
            x = np.loadtxt(f, dtype=np.float32)
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"could not read {path} as .amat (one row of numbers per image): {err}") from None
    return np.atleast_2d(x)


def _read_idx(path):
    """Read an IDX file (LeCun et al.'s MNIST format) into an array."""
    try:
        with _open(path) as f:
            raw = f.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
        dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
        if zero != 0 or dtype_code != 0x08:
            raise ValueError("bad magic number (expected unsigned-byte IDX data)")
        return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    except (OSError, ValueError, EOFError, struct.error) as err:
        raise DataError(f"could not read {path} as an IDX file: {err}") from None


def _binarize(x, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.bernoulli(x, generator=gen)


def _seeded_split(x, y, split_seed, fractions=(0.8, 0.1)):
    n = x.shape[0]
    perm = np.random.default_rng(split_seed).permutation(n)
    n_train, n_valid = int(round(fractions[0] * n)), int(round(fractions[1] * n))
    parts = np.split(perm, [n_train, n_train + n_valid])
    return [Split(torch.as_tensor(x[p]), None if y is None else torch.as_tensor(y[p])) for p in parts]


def _check_array(x, source):
    """Validate an image array; returns (x as float32 (N, P), image_shape)."""
    x = np.asarray(x)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"{source}: expected a numeric array, got dtype {x.dtype}")
    if x.ndim == 3:
        image_shape = tuple(x.shape[1:])
        x = x.reshape(x.shape[0], -1)
    elif x.ndim == 2:
        side = int(round(np.sqrt(x.shape[1])))
        image_shape = (side, side) if side * side == x.shape[1] else None
        rows = int(round(np.sqrt(x.shape[0])))
        if image_shape is None and rows * rows == x.shape[0] and 10 <= x.shape[0] < x.shape[1]:
            raise DataError(f"{source}: shape {x.shape} reads as {x.shape[0]} examples of {x.shape[1]} pixels, but the "
                            f"rows look like pixels ({x.shape[0]} = {rows}x{rows}): transpose it (x.T) so that each "
                            "row is one example")
    else:
        raise DataError(f"{source}: expected an array of shape (N, P) or (N, H, W), got shape {x.shape}")
    x = x.astype(np.float32)
    if x.shape[0] < 10:
        raise DataError(f"{source}: {x.shape[0]} examples; need at least 10 to split into train/valid/test")
    if x.shape[1] < 1:
        raise DataError(f"{source}: examples have no pixels (shape {x.shape})")
    if not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[0]
        raise DataError(f"{source}: non-finite value {x[tuple(bad)]} at row {bad[0]}, column {bad[1]}")
    return x, image_shape


def _check_labels(y, n, source):
    """Validate labels for ``n`` examples; returns them as int64 (n,)."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{source}: expected one label per example, shape ({n},), got shape {y.shape}")
    if y.dtype == bool or not np.issubdtype(y.dtype, np.number):
        raise DataError(f"{source}: expected integer class labels 0, 1, 2, ..., got dtype {y.dtype}")
    if not np.isfinite(y).all() or (y != np.round(y)).any() or (y < 0).any():
        bad = int(np.argwhere(~np.isfinite(y) | (y != np.round(y)) | (y < 0))[0, 0])
        raise DataError(f"{source}: labels must be integers >= 0, found {y[bad].item()!r} at position {bad}")
    return y.astype(np.int64)


def _check_unit_interval(x, source):
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise DataError(
            f"{source}: values must lie in [0, 1] for the Bernoulli likelihood, found min {lo:.4g}, "
            f"max {hi:.4g}; rescale the data, or use --likelihood gaussian"
        )


def _finish(name, splits, image_shape, binary, binarization):
    """Apply the binarization policy and build the Dataset."""
    train, valid, test = splits
    if binary and binarization == "dynamic":
        valid = Split(_binarize(valid.x, BINARIZE_SEED), valid.y)
        test = Split(_binarize(test.x, BINARIZE_SEED + 1), test.y)
    if not binary:
        binarization = "none"
    return Dataset(name, train, valid, test, image_shape, binarization)


def load_digits(data_dir=None, binary=True, split_seed=0):
    """scikit-learn's 8x8 digits, intensities /16; thresholded at 0.5 when ``binary``."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    if binary:
        x = (x > 0.5).astype(np.float32)
    splits = _seeded_split(x, bunch.target.astype(np.int64), split_seed)
    return _finish("digits", splits, (8, 8), binary, "threshold")


def load_binarized_mnist(data_dir=None, binary=True, split_seed=0):
    """Statically binarized MNIST from ``binarized_mnist_{train,valid,test}.amat[.gz]``."""
    splits = []
    for part in ("train", "valid", "test"):
        path = _find(data_dir, f"binarized_mnist_{part}.amat", "binarized-mnist")
        x = _read_amat(path)
        if x.shape[1] != 784:
            raise DataError(f"{path}: expected 784 values per row (28x28), got {x.shape[1]}")
        _check_unit_interval(x, path)
        splits.append(Split(torch.from_numpy(x)))
    return _finish("binarized-mnist", splits, (28, 28), binary, "static")


def _load_idx_pair(data_dir, dataset, binary):
    parts = {}
    for prefix in ("train", "t10k"):
        images = _read_idx(_find(data_dir, f"{prefix}-images-idx3-ubyte", dataset))
        labels = _read_idx(_find(data_dir, f"{prefix}-labels-idx1-ubyte", dataset))
        if images.ndim != 3 or labels.shape != images.shape[:1]:
            raise DataError(f"{dataset}: {prefix} images {images.shape} and labels {labels.shape} do not match")
        parts[prefix] = (torch.from_numpy(images.reshape(len(images), -1) / np.float32(255)),
                         torch.from_numpy(labels.astype(np.int64)))
    (x, y), (xt, yt) = parts["train"], parts["t10k"]
    n_valid = 10000 if len(x) > 20000 else len(x) // 6
    splits = [Split(x[:-n_valid], y[:-n_valid]), Split(x[-n_valid:], y[-n_valid:]), Split(xt, yt)]
    side = int(round(np.sqrt(x.shape[1])))
    return _finish(dataset, splits, (side, side), binary, "dynamic")


def load_mnist(data_dir=None, binary=True, split_seed=0):
    """MNIST from the standard IDX files; the last 10,000 training images are validation."""
    return _load_idx_pair(data_dir, "mnist", binary)


def load_fashion_mnist(data_dir=None, binary=True, split_seed=0):
    """Fashion-MNIST from the standard IDX files; the last 10,000 training images are validation."""
    return _load_idx_pair(data_dir, "fashion-mnist", binary)


def load_array(path, binary=True, split_seed=0):
    """A user's ``.npy`` array, or ``.npz`` with ``x`` (split 80/10/10) or ``x_train``,
    ``x_valid``, ``x_test`` (optional labels ``y`` / ``y_train``...)."""
    if not os.path.isfile(path):
        raise DataError(f"--data {path}: no such file")
    with open(path, "rb") as f:
        head = f.read(8)
    if not head.startswith((b"\x93NUMPY", b"PK")):  # the .npy magic string, a .npz (zip) archive
        what = ("pickled data, which is refused" if head[:1] == b"\x80" else
                f"no NumPy array (it begins {head!r}; a .npy starts with \\x93NUMPY, a .npz is a zip archive)")
        raise DataError(f"could not read {path}: the file holds {what}; save the array with numpy.save or "
                        "numpy.savez")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"could not read {path} as a NumPy array (pickled arrays are refused): {err}") from None
    if isinstance(loaded, np.ndarray):
        arrays, labels = {"x": loaded}, {}
    else:
        with loaded:
            keys = set(loaded.files)
            if {"x_train", "x_valid", "x_test"} <= keys:
                arrays = {k: loaded[f"x_{k}"] for k in ("train", "valid", "test")}
                labels = {k: loaded[f"y_{k}"] for k in ("train", "valid", "test") if f"y_{k}" in keys}
            elif "x" in keys or len(keys) == 1:
                key = "x" if "x" in keys else next(iter(keys))
                arrays, labels = {"x": loaded[key]}, ({"x": loaded["y"]} if "y" in keys else {})
            else:
                raise DataError(f"{path}: expected arrays 'x' or 'x_train', 'x_valid', 'x_test'; found {sorted(keys)}")
    checked = {}
    for key, arr in arrays.items():
        checked[key], image_shape = _check_array(arr, f"{path} [{key}]")
        if binary:
            _check_unit_interval(checked[key], f"{path} [{key}]")
    labels = {k: _check_labels(y, len(checked[k]), f"{path} [{'y' if k == 'x' else 'y_' + k}]")
              for k, y in labels.items()}
    if "x" in checked:
        splits = _seeded_split(checked["x"], labels.get("x"), split_seed)
    else:
        splits = [Split(torch.from_numpy(checked[k]), None if k not in labels else torch.as_tensor(labels[k]))
                  for k in ("train", "valid", "test")]
        if len({s.x.shape[1] for s in splits}) != 1:
            raise DataError(f"{path}: splits have different numbers of pixels {[s.x.shape[1] for s in splits]}")
    all_binary = all(bool(((s.x == 0) | (s.x == 1)).all()) for s in splits)
    name = os.path.basename(path)
    return _finish(name, splits, image_shape, binary, "static" if all_binary else "dynamic")


# name -> loader(data_dir, binary, split_seed); a path ending in .npy/.npz is read by load_array
DATASETS = {
    "digits": load_digits,
    "binarized-mnist": load_binarized_mnist,
    "mnist": load_mnist,
    "fashion-mnist": load_fashion_mnist,
}


def load_dataset(name, data_dir=None, binary=True, split_seed=0):
    """Load the dataset ``name`` (a key of :data:`DATASETS`, or a ``.npy``/``.npz`` path).

    :param bool binary: prepare binary data for a Bernoulli likelihood (see module doc);
        False keeps intensities in [0, 1] for a Gaussian likelihood.
    :param int split_seed: seed of the train/valid/test permutation where one is made.
    :raises DataError: for a missing file (the message names the files expected and where),
        a wrong shape, non-finite values, or values outside [0, 1] for a Bernoulli likelihood.
    """
    if name.endswith((".npy", ".npz")):
        return load_array(name, binary, split_seed)
    if name not in DATASETS:
        valid = ", ".join(sorted(DATASETS))
        raise DataError(f"unknown dataset {name!r}; valid names: {valid}, or a path to a .npy/.npz file")
    return DATASETS[name](data_dir, binary, split_seed)


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
