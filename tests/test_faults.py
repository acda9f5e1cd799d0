"""Faults end in one line and lose nothing: I/O errors, metadata a user edited, bad numbers and
arrays, signals in every command, evaluations that name what they evaluated."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from pyrovae import cli
from pyrovae.runs.checkpoint import load_checkpoint

SMALL = ["--hidden", "16", "--latent-dim", "2", "--eval-num-samples", "0"]


def _one_line(capsys, *needles, prefix="pyrovae: error:"):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("KL terms", "epoch "))]
    assert len(lines) == 1 and lines[0].startswith(prefix) and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "run"
    assert cli.main(["train", "--epochs", "2", "--out", str(out), *SMALL]) == 0
    return out


@pytest.fixture
def run(trained, tmp_path):
    """A copy of the trained run, to damage."""
    return shutil.copytree(trained, tmp_path / "run")


# -- I/O faults ------------------------------------------------------------------------------

def test_full_disk_exits_2_in_one_line_and_the_checkpoints_still_load(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    real_fsync, calls = os.fsync, []

    def fsync(fd):  # config.json, then best.pt and last.pt of epoch 1, then the disk is full
        calls.append(fd)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert cli.main(["train", "--epochs", "3", "--out", str(out), *SMALL]) == 2
    _one_line(capsys, "No space left on device", "last.pt is intact (epoch 1)", "--resume")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert load_checkpoint(str(out / "last.pt"))["epoch"] == 1 and load_checkpoint(str(out / "best.pt"))["epoch"] == 1
    assert not [n for n in os.listdir(out) if n.startswith(".tmp-")]  # no partial file left
    assert cli.main(["train", "--epochs", "3", "--out", str(out), "--resume", *SMALL]) == 0
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_out_under_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert cli.main(["train", "--epochs", "1", "--out", str(tmp_path / "notes.txt" / "run"), *SMALL]) == 2
    _one_line(capsys, "Not a directory", "notes.txt")
    assert (tmp_path / "notes.txt").read_text() == "mine"


# a real full and a read-only filesystem: tmpfs mounts in a private mount namespace
FILESYSTEMS = r"""
import json, os, subprocess, sys
root, small = sys.argv[1], sys.argv[2:]
full, ro = os.path.join(root, "full"), os.path.join(root, "ro")
os.makedirs(full); os.makedirs(ro)
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", full], check=True)
subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", ro], check=True)
filler = os.path.join(full, "filler")
with open(filler, "wb") as f:  # leave 12 KiB: config.json fits, a checkpoint (60 KiB) does not
    f.write(b"0" * (1012 * 1024))
train = [sys.executable, "-m", "pyrovae", "train", "--epochs", "2", *small]
def run(args, cwd=None):
    p = subprocess.run(train + args, capture_output=True, text=True, cwd=cwd)
    return [p.returncode, p.stderr]
report = {"full": run(["--out", os.path.join(full, "run")])}
report["listing"] = sorted(os.listdir(os.path.join(full, "run")))
os.unlink(filler)
report["rerun"] = run(["--out", os.path.join(full, "run")])
report["readonly"] = run(["--out", os.path.join(ro, "run")])
report["readonly_cwd"] = run([], cwd=ro)
print(json.dumps(report))
"""


def _private_mounts():
    try:
        return subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _private_mounts(), reason="needs unshare and tmpfs mounts in a private namespace")
def test_real_full_and_read_only_filesystems(tmp_path):
    proc = subprocess.run(["unshare", "-rm", sys.executable, "-c", FILESYSTEMS, str(tmp_path), *SMALL],
                          capture_output=True, text=True, timeout=600, cwd=os.getcwd())
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)

    def one_line(result, *needles):
        code, err = result
        lines = [line for line in err.splitlines() if line.startswith("pyrovae:")]
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert all(n in lines[0] for n in needles), lines[0]

    # the first checkpoint did not fit: said truthfully, and the same command reuses the folder
    one_line(r["full"], "No space left on device", "no checkpoint was written", "the same command starts")
    assert "last.pt" not in r["listing"] and "best.pt" not in r["listing"]
    assert r["rerun"][0] == 0, r["rerun"][1]
    one_line(r["readonly"], "Read-only file system", "ro/run")
    one_line(r["readonly_cwd"], "Read-only file system", "runs")


def test_a_diverged_first_epoch_is_said_truthfully_and_the_folder_reused(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--epochs", "1", "--lr", "1e9", "--eval-num-samples", "0", "--out", str(out)]) == 1
    _one_line(capsys, "No checkpoint was written", "a lower --lr", "no --overwrite needed")
    assert sorted(os.listdir(out)) == ["config.json"]
    assert cli.main(["train", "--epochs", "1", "--out", str(out), *SMALL]) == 0  # no --overwrite needed
    assert load_checkpoint(str(out / "last.pt"))["epoch"] == 1


def test_resume_of_a_run_with_no_checkpoint_starts_it_from_the_beginning(run, capsys):
    for name in os.listdir(run):  # as a run that failed before its first checkpoint leaves it
        if name != "config.json":
            (run / name).unlink()
    assert cli.main(["train", "--out", str(run), "--resume"]) == 0  # the saved options: 2 epochs
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


# -- metadata a user edited ----------------------------------------------------------------

@pytest.mark.parametrize("key, value, needle", [
    ("latent_dim", "abc", 'key "latent_dim" must be an integer'),
    ("hidden", 200, 'key "hidden" must be a list of positive integers'),
    ("patience", "x", 'key "patience" must be an integer'),
    ("seed", -3, 'key "seed" must be an integer >= 0'),
])
def test_config_json_is_validated_on_read_naming_the_file_and_key(run, capsys, key, value, needle):
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, key: value}))
    for args in (["evaluate", str(run), "--num-samples", "5"], ["train", "--out", str(run), "--resume"]):
        assert cli.main(args) == 2
        line = _one_line(capsys, needle, str(run / "config.json"))
        assert "--" + key.replace("_", "-") not in line  # no option the user never passed


def test_a_torn_metrics_line_is_reported_and_tolerated(run, capsys):
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "step": 4')  # a crash in the middle of an append
    assert cli.main(["plot", str(run)]) == 0
    _one_line(capsys, "ignored a torn last line", prefix="pyrovae: warning:")
    assert cli.main(["train", "--out", str(run), "--resume", "--epochs", "3", *SMALL]) == 0
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_a_checkpoint_that_does_not_fit_is_one_line_on_every_path(run, capsys):
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "latent_dim": 3}))
    assert cli.main(["train", "--out", str(run), "--resume", "--epochs", "3"]) == 2
    _one_line(capsys, "last.pt does not fit", "config.json")
    for command in ("evaluate", "plot"):
        assert cli.main([command, str(run)]) == 2
        _one_line(capsys, "does not fit its config.json")


# -- numbers and arrays --------------------------------------------------------------------

@pytest.mark.parametrize("args, needle", [
    (["--batch-size", "0"], "--batch-size: the value must be an integer >= 1"),
    (["--refine-steps", "-1"], "--refine-steps: the value must be an integer >= 0"),
    (["--seed", "99999999999999999999"], "--seed: the value must be an integer in [0, 2**63)"),
    (["--num-samples", "2.5"], "--num-samples: expected an integer"),
])
def test_bad_numbers_of_evaluate(trained, capsys, args, needle):
    assert cli.main(["evaluate", str(trained), *args]) == 2
    _one_line(capsys, needle)


@pytest.mark.parametrize("num_samples", ["1", "2"])
def test_too_few_samples_for_k_hat_give_strict_json_with_a_reason(trained, capsys, num_samples):
    assert cli.main(["evaluate", str(trained), "--num-samples", num_samples]) == 0
    path = trained / f"eval_test_best_amortized_K{num_samples}.json"
    text = path.read_text()
    report = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in {path}"))
    assert report["khat_median"] is None and "K >= 21" in report["khat_note"]
    assert "PSIS k-hat: not computed" in capsys.readouterr().err


@pytest.mark.parametrize("args, needle", [
    (["--split-seed", "-1"], "--split-seed must be an integer >= 0"),
    (["--seed", str(2**64)], "--seed must be an integer in [0, 2**63)"),
    (["--lr", "nan"], "--lr must be a finite number > 0"),
])
def test_bad_numbers_of_train(tmp_path, capsys, args, needle):
    assert cli.main(["train", "--out", str(tmp_path / "run"), *args]) == 2
    _one_line(capsys, needle)
    assert not (tmp_path / "run").exists()


def _save(path, **arrays):
    if path.suffix == ".npy":
        np.save(path, arrays["x"])
    else:
        np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize("name, arrays, needle", [
    ("labels.npz", {"x": np.zeros((50, 16)), "y": np.zeros(49, dtype=int)}, "[y]: expected one label per example"),
    ("labels.npz", {"x": np.zeros((50, 16)), "y": np.full(50, 0.5)}, "labels must be integers >= 0"),
    ("labels.npz", {"x": np.zeros((50, 16)), "y": np.array(["a"] * 50)}, "expected integer class labels"),
    ("transposed.npy", {"x": np.zeros((64, 300))}, "transpose it (x.T)"),
])
def test_bad_arrays(tmp_path, capsys, name, arrays, needle):
    path = _save(tmp_path / name, **arrays)
    assert cli.main(["train", "--data", path, "--out", str(tmp_path / "run"), *SMALL]) == 2
    _one_line(capsys, needle)


def test_a_text_file_named_npy(tmp_path, capsys):
    (tmp_path / "x.npy").write_text("0 1 0 1\n1 0 1 0\n")
    assert cli.main(["train", "--data", str(tmp_path / "x.npy"), "--out", str(tmp_path / "run")]) == 2
    line = _one_line(capsys, "holds no NumPy array", "numpy.save")
    assert "pickled" not in line


# -- evaluations name what they evaluated ---------------------------------------------------

def test_evaluating_last_does_not_replace_the_evaluation_of_best(run, capsys):
    assert cli.main(["evaluate", str(run), "--num-samples", "30"]) == 0
    best = (run / "eval_test_best_amortized_K30.json").read_text()
    assert cli.main(["evaluate", str(run), "--num-samples", "30", "--checkpoint", "last"]) == 0
    assert cli.main(["evaluate", str(run), "--num-samples", "30", "--seed", "1"]) == 0
    assert (run / "eval_test_best_amortized_K30.json").read_text() == best
    last = json.loads((run / "eval_test_last_amortized_K30.json").read_text())
    assert last["checkpoint"] == "last" and (run / "eval_test_best_amortized_K30_seed1.json").exists()
    assert (run / "khat_test_last_amortized_K30.png").exists() and (run / "khat_test_best_amortized_K30.png").exists()


# -- signals in every command ---------------------------------------------------------------

@pytest.mark.parametrize("command", [
    ["evaluate", "--num-samples", "200000"],
    ["impute", "--num-samples", "20000", "--steps", "2000"],
])
def test_ctrl_c_in_a_reading_command_says_so_in_one_line(trained, capsys, command):
    before = sorted(os.listdir(trained))
    # Ctrl-C as a terminal delivers it (a shell's background job starts with SIGINT ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        code = cli.main([command[0], str(trained), *command[1:]])
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert code == 130
    _one_line(capsys, f"SIGINT: {command[0]} stopped", f"pyrovae {command[0]} {trained}", prefix="pyrovae:")
    assert sorted(os.listdir(trained)) == before


def test_sigterm_in_the_final_evaluation_of_train(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "pyrovae", "train", "--out", str(out), "--epochs", "2",
                             "--hidden", "16", "--latent-dim", "2", "--eval-num-samples", "200000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() or len((out / "metrics.jsonl").read_text().splitlines()) < 2:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.1)
    time.sleep(2)  # past the last checkpoint, into the evaluation of best.pt
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.startswith("pyrovae:")]
    assert len(lines) == 1 and "training finished (2 epochs" in lines[0], err
    assert f"pyrovae evaluate {out} --num-samples 200000" in lines[0]
    assert load_checkpoint(str(out / "best.pt"))["epoch"] >= 1 and not (out / ".lock").exists()
