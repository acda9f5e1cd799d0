"""``pyrovae bench`` on this machine: the digits-epoch group runs the real ``train`` and the
hand-written loop; the CUDA paths synchronize around every timed block (checked here with a
recorder in place of ``torch.cuda.synchronize``: this suite runs without a GPU, so the CUDA
timings themselves are not measured by it)."""

import os

import pytest
import torch

from pyrovae.analysis import bench, bench_epoch
from pyrovae.errors import ConfigError


def test_digits_epoch_group_times_train_and_the_hand_written_loop(tmp_path):
    rows = bench_epoch.time_digits_epochs(epochs=2, repeats=1, rows=["pyrovae train --checkpoint-every 10"],
                                          folder=str(tmp_path))
    assert [r["row"] for r in rows] == ["reference: hand-written loop (steps, validation ELBO, torch.save + rename)",
                                        "pyrovae train --checkpoint-every 10"]
    assert rows[0]["ratio"] == 1 and all(r["seconds_median"] > 0 and r["ratio"] > 0 for r in rows)
    assert os.listdir(tmp_path) == []  # the runs are removed
    with pytest.raises(ValueError, match="at least 2"):
        bench_epoch.time_digits_epochs(epochs=1)


def test_cuda_timings_synchronize_around_each_block(monkeypatch):
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    cuda = torch.device("cuda")
    steps = {"reference": lambda: None, "row": lambda: None}
    bench._time_round_robin(steps, steps=3, warmup=1, repeats=2, device=cuda)
    assert synced == [cuda] * 8  # before and after each of 2 rows x 2 repeats
    clock = bench_epoch._EpochClock(cuda)
    clock.on_epoch_end(None), clock.on_epoch_end(None)
    assert len(synced) == 10 and len(clock.epoch_seconds()) == 1


def test_digits_rows_run_on_the_requested_device(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(bench_epoch, "_pyrovae_epochs", lambda options, epochs, device, folder, seed: seen.append(
        ("train", device)) or [1.0])
    monkeypatch.setattr(bench_epoch, "_reference_epochs", lambda data, epochs, device, folder, seed: seen.append(
        ("reference", device)) or [1.0])
    bench_epoch.time_digits_epochs(epochs=2, repeats=1, device="cpu", folder=str(tmp_path))
    assert seen == [("reference", torch.device("cpu"))] + [("train", torch.device("cpu"))] * 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_bench_on_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ConfigError, match="cuda"):
        bench.run_bench(device="cuda", startup_repeats=0)
