"""Faults: killed processes, signals, interrupted checkpoint writes; resume is exact."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from pyrovae.config import TrainConfig
from pyrovae.runs.checkpoint import load_checkpoint
from pyrovae.runs.train import train
from pyrovae.training.step import Step

ARGS = ["--hidden", "32", "--latent-dim", "4", "--batch-size", "20", "--eval-num-samples", "0"]


def _config(**kw):
    return TrainConfig(**{"hidden": (32,), "latent_dim": 4, "batch_size": 20, "eval_num_samples": 0, **kw})


def _cli(out, *extra):
    return [sys.executable, "-m", "pyrovae", "train", "--out", str(out), *ARGS, *extra]


def _lines(path):
    return (path / "metrics.jsonl").read_text().splitlines() if (path / "metrics.jsonl").exists() else []


def _same_run(a, b):
    """Same parameters, optimizer state and metrics (wall-clock seconds aside)."""
    ca, cb = load_checkpoint(str(a / "last.pt")), load_checkpoint(str(b / "last.pt"))
    for part in ("model", "guide"):
        for key in ca[part]:
            assert torch.equal(ca[part][key], cb[part][key]), (part, key)
    assert ca["step"] == cb["step"] and ca["epoch"] == cb["epoch"]

    def strip(path):
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in _lines(path)]

    assert strip(a) == strip(b)


def _wait_for_epochs(proc, out, n, timeout=120):
    t0 = time.time()
    while len(_lines(out)) < n:
        assert proc.poll() is None, "training finished before it could be interrupted"
        assert time.time() - t0 < timeout
        time.sleep(0.05)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    subprocess.run(_cli(out, "--epochs", "15"), check=True, capture_output=True, timeout=300)
    return out


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_killed_or_signalled_process_resumes_exactly(tmp_path, uninterrupted, sig):
    out = tmp_path / "run"
    proc = subprocess.Popen(_cli(out, "--epochs", "15"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_epochs(proc, out, 2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 130, err
        assert f"{signal.Signals(sig).name}: stopped cleanly" in err and "--resume" in err
        assert "Traceback" not in err
    assert len(_lines(out)) < 15
    subprocess.run(_cli(out, "--epochs", "15", "--resume"), check=True, capture_output=True, timeout=300)
    _same_run(uninterrupted, out)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stop_inside_an_epoch_checkpoints_the_step_and_resumes_exactly(tmp_path, monkeypatch, sig):
    """A SIGINT or SIGTERM at step 20 (epoch 1 has 72 steps) saves that step's state, not the epoch's."""
    straight = tmp_path / "straight"
    train(_config(epochs=2), str(straight), progress=False)
    real, calls = Step.loss, {"n": 0}  # each step's loss, compiled or not

    def signalling(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 20:
            signal.raise_signal(sig)
        return real(*args, **kwargs)

    monkeypatch.setattr(Step, "loss", signalling)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(_config(epochs=2), str(out), progress=False)
    state = load_checkpoint(str(out / "last.pt"))
    assert (state["epoch"], state["batch"], state["step"]) == (0, 20, 20)
    monkeypatch.undo()
    train(_config(epochs=2), str(out), resume=True, progress=False)
    _same_run(straight, out)


CHILD = """
import sys, time, torch
from pyrovae.runs import checkpoint
path = sys.argv[1]
checkpoint.save_checkpoint(path, {"epoch": 1})
real_save = torch.save
def slow_save(obj, f):
    f.write(b"PK partial")
    f.flush()
    print("writing", flush=True)
    time.sleep(60)
checkpoint.torch.save = slow_save
checkpoint.save_checkpoint(path, {"epoch": 2})
"""


def test_process_killed_while_writing_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.kill()
    proc.wait(timeout=30)
    assert load_checkpoint(str(path))["epoch"] == 1


def test_resume_of_stale_partial_write_is_cleaned(tmp_path):
    out = tmp_path / "run"
    train(_config(epochs=1), str(out), progress=False)
    (out / ".tmp-crashed").write_bytes(b"partial")
    train(_config(epochs=2), str(out), resume=True, progress=False)
    assert not (out / ".tmp-crashed").exists()


def test_checkpoint_every_n_epochs_keeps_a_resumable_state_and_ends_like_every_epoch(tmp_path):
    """Checkpointer(every=3) over 8 epochs: a crash in epoch 6 leaves last.pt at epoch 3 and best.pt
    no later than it; resuming from there ends, best.pt included, exactly where the run that saved
    every epoch ends; a run stopped early between checkpoints saves its last epoch."""
    import pyro

    from tests.exact import make_ppca
    from pyrovae.training import Callback, Checkpointer, EarlyStopping, MetricsLog, fit

    class Crash(Callback):
        def on_epoch_end(self, loop):
            if loop.state.epoch == 5:
                raise RuntimeError("simulated crash")

    def run(out, every, epochs=8, extra=(), resume=False, patience=100):
        ppca = make_ppca(num_pixels=6, latent_dim=3, num_data=60)
        torch.manual_seed(0)
        out.mkdir(exist_ok=True)
        fit(ppca.model, ppca.guide_at(0.5, 1.5), pyro.infer.Trace_ELBO(), ppca.x, epochs, valid=ppca.x[:20],
            batch_size=20, lr=3e-2, callbacks=[MetricsLog(str(out / "metrics.jsonl")),
                                               Checkpointer(str(out), resume=resume, every=every),
                                               EarlyStopping(patience), *extra])

    run(tmp_path / "every", 1)
    sparse = tmp_path / "sparse"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(sparse, 3, extra=[Crash()])
    assert load_checkpoint(str(sparse / "last.pt"))["epoch"] == 3 and len(_lines(sparse)) == 5
    assert load_checkpoint(str(sparse / "best.pt"))["epoch"] <= 3
    run(sparse, 3, resume=True)
    _same_run(tmp_path / "every", sparse)
    a, b = load_checkpoint(str(tmp_path / "every" / "best.pt")), load_checkpoint(str(sparse / "best.pt"))
    assert a["epoch"] == b["epoch"] and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    early = tmp_path / "early"
    run(early, 40, epochs=200, patience=1)
    assert load_checkpoint(str(early / "last.pt"))["epoch"] == len(_lines(early)) < 200  # stopped early, saved
