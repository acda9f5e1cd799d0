"""Checkpoints: atomic writes, safe loading, RNG state."""

import os
import random

import numpy as np
import pytest
import torch

from pyrovae.errors import CheckpointError
from pyrovae.runs import checkpoint as ckpt


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # what a malicious checkpoint would run on unpickling
        return (open, (self.marker, "w"))


def test_crafted_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "model": _Payload(str(marker))}, path)
    with pytest.raises(CheckpointError, match="only tensors and plain data"):
        ckpt.load_checkpoint(str(path))
    assert not marker.exists()


def test_truncated_and_foreign_files(tmp_path):
    path = tmp_path / "last.pt"
    ckpt.save_checkpoint(str(path), {"w": torch.ones(1000)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        ckpt.load_checkpoint(str(path))
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(CheckpointError, match="format version"):
        ckpt.load_checkpoint(str(path))
    with pytest.raises(CheckpointError, match="no checkpoint"):
        ckpt.load_checkpoint(str(tmp_path / "missing.pt"))


def test_crash_during_write_keeps_previous(tmp_path, monkeypatch):
    path = str(tmp_path / "last.pt")
    ckpt.save_checkpoint(path, {"epoch": 1})

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(path, {"epoch": 2})
    monkeypatch.undo()
    assert ckpt.load_checkpoint(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["last.pt"]  # no temporary file left behind


def test_rng_state_roundtrip(tmp_path):
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    path = str(tmp_path / "rng.pt")
    ckpt.save_checkpoint(path, {"rng": ckpt.get_rng_state(gen)})
    expected = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=gen))
    torch.manual_seed(99), np.random.seed(99), random.seed(99), gen.manual_seed(99)
    ckpt.set_rng_state(ckpt.load_checkpoint(path)["rng"], gen)
    got = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=gen))
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1])
    assert expected[2] == got[2] and torch.equal(expected[3], got[3])


def test_one_state_to_two_files_gives_two_independent_files(tmp_path):
    """best.pt and last.pt written together hold the same bytes in separate files: damage to one
    leaves the other loadable."""
    best, last = tmp_path / "best.pt", tmp_path / "last.pt"
    ckpt.save_checkpoint(str(best), {"w": torch.arange(1000.0), "epoch": 3}, str(last))
    assert best.read_bytes() == last.read_bytes() and os.stat(best).st_ino != os.stat(last).st_ino
    last.write_bytes(last.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="truncated"):
        ckpt.load_checkpoint(str(last))
    state = ckpt.load_checkpoint(str(best))
    assert state["epoch"] == 3 and torch.equal(state["w"], torch.arange(1000.0))
    assert sorted(os.listdir(tmp_path)) == ["best.pt", "last.pt"]
