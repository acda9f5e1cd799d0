"""A user's own arrays (``.npy``, ``.npz``) and the checks every loader's images and labels pass."""

import os

import numpy as np
import torch

from pyrovae.data.splits import Split, finish, seeded_split
from pyrovae.errors import DataError

__all__ = ["check_array", "check_labels", "check_unit_interval", "load_array"]


def check_array(x, source):
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


def check_labels(y, n, source):
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


def check_unit_interval(x, source):
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise DataError(
            f"{source}: values must lie in [0, 1] for the Bernoulli likelihood, found min {lo:.4g}, "
            f"max {hi:.4g}; rescale the data, or use --likelihood gaussian"
        )


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
        checked[key], image_shape = check_array(arr, f"{path} [{key}]")
        if binary:
            check_unit_interval(checked[key], f"{path} [{key}]")
    labels = {k: check_labels(y, len(checked[k]), f"{path} [{'y' if k == 'x' else 'y_' + k}]")
              for k, y in labels.items()}
    if "x" in checked:
        splits = seeded_split(checked["x"], labels.get("x"), split_seed)
    else:
        splits = [Split(torch.from_numpy(checked[k]), None if k not in labels else torch.as_tensor(labels[k]))
                  for k in ("train", "valid", "test")]
        if len({s.x.shape[1] for s in splits}) != 1:
            raise DataError(f"{path}: splits have different numbers of pixels {[s.x.shape[1] for s in splits]}")
    all_binary = all(bool(((s.x == 0) | (s.x == 1)).all()) for s in splits)
    name = os.path.basename(path)
    return finish(name, splits, image_shape, binary, "static" if all_binary else "dynamic")
