"""Atomic writes, safe checkpoint loading, and RNG state capture.

Checkpoints hold only tensors and plain Python data and are read with
``torch.load(..., weights_only=True)``, which refuses arbitrary pickled objects.
Files are written to a temporary name in the same folder, flushed to disk, then
renamed over the target, so a crash mid-write leaves the previous file intact.
"""

import io
import os
import pickle
import random
import tempfile
import zipfile

import numpy as np
import torch

from pyrovae.errors import CheckpointError

__all__ = ["atomic_write_text", "save_checkpoint", "load_checkpoint", "saved_epoch", "describe_mismatch", "get_rng_state",
           "set_rng_state"]

FORMAT_VERSION = 1


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path, write):
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text):
    """Write ``text`` to ``path`` atomically (temporary file, fsync, rename)."""
    _atomic_write(path, lambda f: f.write(text.encode()))


def save_checkpoint(path, state, *more_paths):
    """Save a dict of tensors and plain data atomically, with a format version, to ``path`` and
    to each of ``more_paths``: serialized once, each file written and flushed on its own, so a
    file damaged later leaves the others whole."""
    state = dict(state, format_version=FORMAT_VERSION)
    if not more_paths:
        _atomic_write(path, lambda f: torch.save(state, f))
        return
    buffer = io.BytesIO()
    torch.save(state, buffer)
    for target in (path, *more_paths):
        _atomic_write(target, lambda f: f.write(buffer.getbuffer()))


def load_checkpoint(path, map_location="cpu"):
    """Load a checkpoint written by :func:`save_checkpoint`.

    :raises CheckpointError: if the file is missing, truncated, corrupted, holds anything
        but tensors and plain data (``weights_only=True`` refuses pickled code), or has an
        unknown format version.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"could not load checkpoint {path} (truncated, corrupted, or not a pyrovae checkpoint; "
            f"only tensors and plain data are accepted): {first}"
        ) from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a pyrovae checkpoint of format version {FORMAT_VERSION}")
    return state


def saved_epoch(path):
    """The epoch the checkpoint at ``path`` holds, or None when there is no file there.

    :raises CheckpointError: when the file exists but cannot be read back.
    """
    if not os.path.isfile(path):
        return None
    state = load_checkpoint(path)
    if "epoch" not in state:
        raise CheckpointError(f"{path} holds no epoch")
    return state["epoch"]


def describe_mismatch(err):
    """One line for an error of ``load_state_dict`` (or a missing key): its first difference,
    and how many more there are. PyTorch's message lists one difference per line."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    details = [line for line in lines[1:] if line] or lines[:1] or [type(err).__name__]
    more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
    return f"{type(err).__name__}: {details[0].rstrip('.')}{more}"


def get_rng_state(data_generator):
    """RNG states of torch, NumPy, Python's ``random`` and the data-order generator,
    as tensors and plain data."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "python": _to_plain(random.getstate()),
        "data": data_generator.get_state(),
    }


def set_rng_state(state, data_generator):
    """Restore the states captured by :func:`get_rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), cached))
    random.setstate(_to_tuple(state["python"]))
    data_generator.set_state(state["data"])


def _to_plain(obj):
    return [_to_plain(o) for o in obj] if isinstance(obj, tuple) else obj


def _to_tuple(obj):
    return tuple(_to_tuple(o) for o in obj) if isinstance(obj, list) else obj
