"""The bundled digits and the MNIST-style files a user keeps locally (``.amat``, IDX); nothing
is downloaded."""

import gzip
import os
import struct

import numpy as np
import torch

from pyrovae.data.arrays import check_unit_interval
from pyrovae.data.splits import Split, finish, seeded_split
from pyrovae.errors import DataError

__all__ = ["load_digits", "load_binarized_mnist", "load_mnist", "load_fashion_mnist"]


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


def _binary_rows(raw):
    """``raw`` (bytes) parsed as rows of single-digit 0/1 values separated by blanks, as the
    binarized-MNIST files are: (N, P) float32, or None where the text is anything else (then
    ``np.loadtxt`` reads it). About 10 times faster than ``np.loadtxt`` on the 50,000-row split."""
    b = np.frombuffer(raw, dtype=np.uint8)
    width = raw.find(b"\n") + 1  # the usual layout: every row "d d ... d\n", of one width
    if width > 1 and width % 2 == 0 and len(b) % width == 0:
        rows = b.reshape(-1, width)
        values = rows[:, 0::2]
        if (rows[:, -1] == 10).all() and (rows[:, 1:-1:2] == 32).all() and ((values & 0xFE) == 48).all():
            return (values - 48).astype(np.float32)
    digit = (b == 48) | (b == 49)  # "0", "1"
    newline = b == 10
    if not (digit | newline | (b == 32) | (b == 13) | (b == 9)).all() or (digit[1:] & digit[:-1]).any():
        return None  # other characters, or multi-digit numbers
    counts = np.diff(np.concatenate([[0], np.cumsum(digit)[np.flatnonzero(newline)], [digit.sum()]]))
    counts = counts[counts > 0]  # blank lines and a missing final newline
    if len(counts) == 0 or (counts != counts[0]).any():
        return None  # let loadtxt name the ragged row
    return (b[digit] - 48).astype(np.float32).reshape(len(counts), int(counts[0]))


def _read_amat(path):
    try:
        with _open(path) as f:
            raw = f.read()
        x = _binary_rows(raw)
        if x is None:
            x = np.loadtxt(raw.decode("ascii", errors="replace").splitlines(), dtype=np.float32)
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


def load_digits(data_dir=None, binary=True, split_seed=0):
    """scikit-learn's 8x8 digits, intensities /16; thresholded at 0.5 when ``binary``."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    if binary:
        x = (x > 0.5).astype(np.float32)
    splits = seeded_split(x, bunch.target.astype(np.int64), split_seed)
    return finish("digits", splits, (8, 8), binary, "threshold")


def load_binarized_mnist(data_dir=None, binary=True, split_seed=0):
    """Statically binarized MNIST from ``binarized_mnist_{train,valid,test}.amat[.gz]``."""
    splits = []
    for part in ("train", "valid", "test"):
        path = _find(data_dir, f"binarized_mnist_{part}.amat", "binarized-mnist")
        x = _read_amat(path)
        if x.shape[1] != 784:
            raise DataError(f"{path}: expected 784 values per row (28x28), got {x.shape[1]}")
        check_unit_interval(x, path)
        splits.append(Split(torch.from_numpy(x)))
    return finish("binarized-mnist", splits, (28, 28), binary, "static")


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
    return finish(dataset, splits, (side, side), binary, "dynamic")


def load_mnist(data_dir=None, binary=True, split_seed=0):
    """MNIST from the standard IDX files; the last 10,000 training images are validation."""
    return _load_idx_pair(data_dir, "mnist", binary)


def load_fashion_mnist(data_dir=None, binary=True, split_seed=0):
    """Fashion-MNIST from the standard IDX files; the last 10,000 training images are validation."""
    return _load_idx_pair(data_dir, "fashion-mnist", binary)
