"""Run directories are owned: --overwrite replaces a pyrovae run's own files and nothing else, and
one process at a time writes a run (an OS file lock), while readers keep working."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from pyrovae import cli
from pyrovae.runs.runlock import RunLock

SMALL = ["--hidden", "16", "--latent-dim", "2", "--eval-num-samples", "10"]


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert err.startswith("pyrovae: error:") and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_overwrite_refuses_a_users_folder_and_deletes_nothing(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "v"
    folder.mkdir()
    x = (np.random.default_rng(0).random((60, 16)) < 0.3).astype(np.float32)
    np.save(folder / "x.npy", x)
    (folder / "notes.txt").write_text("my notes")
    before = sorted(os.listdir(folder))
    args = ["train", "--data", str(folder / "x.npy"), "--epochs", "1", "--batch-size", "10", *SMALL]
    assert cli.main([*args, "--out", str(folder), "--overwrite"]) == 2
    _one_line_error(capsys, "holds no config.json", "nothing was deleted")
    monkeypatch.chdir(folder)  # --out . takes the same path
    assert cli.main([*args, "--out", ".", "--overwrite"]) == 2
    _one_line_error(capsys, "nothing was deleted")
    assert sorted(os.listdir(folder)) == before and (folder / "notes.txt").read_text() == "my notes"
    np.testing.assert_array_equal(np.load(folder / "x.npy"), x)


def test_overwrite_replaces_a_run_but_not_files_added_to_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--epochs", "2", "--out", str(out), *SMALL]) == 0
    (out / "my-analysis.ipynb").write_text("{}")
    assert cli.main(["train", "--epochs", "1", "--out", str(out), "--overwrite", *SMALL]) == 2
    _one_line_error(capsys, "my-analysis.ipynb", "nothing was deleted")
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2  # the old run, untouched
    (out / "my-analysis.ipynb").unlink()
    assert cli.main(["train", "--epochs", "1", "--out", str(out), "--overwrite", *SMALL]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1  # the new run
    assert json.loads((out / "config.json").read_text())["epochs"] == 1


def test_a_second_writer_is_refused_at_once_and_readers_keep_working(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--epochs", "1", "--out", str(out), *SMALL]) == 0
    holder = RunLock().acquire(str(out))  # as a training process holds it
    try:
        for args in (["--resume", "--epochs", "2"], ["--overwrite", "--epochs", "1"]):
            assert cli.main(["train", "--out", str(out), *args, *SMALL]) == 2
            _one_line_error(capsys, f"PID {os.getpid()}", "being written by another process")
        assert cli.main(["evaluate", str(out), "--num-samples", "5"]) == 0  # a reader
    finally:
        holder.release()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert cli.main(["train", "--out", str(out), "--resume", "--epochs", "2", *SMALL]) == 0  # free again


def test_two_concurrent_resumes_one_refused_the_log_one_line_per_epoch(tmp_path):
    out = tmp_path / "run"
    base = [sys.executable, "-m", "pyrovae", "train", "--out", str(out), *SMALL]
    subprocess.run([*base, "--epochs", "1"], check=True, capture_output=True, timeout=300)
    first = subprocess.Popen([*base, "--resume", "--epochs", "100000", "--patience", "100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.time() + 120
    while len((out / "metrics.jsonl").read_text().splitlines()) < 2 and time.time() < deadline:
        time.sleep(0.2)  # the first resume is writing the run
    started = time.perf_counter()
    second = subprocess.run([*base, "--resume", "--epochs", "30"], capture_output=True, text=True, timeout=300)
    assert second.returncode == 2 and f"PID {first.pid}" in second.stderr, second.stderr
    assert time.perf_counter() - started < 60  # refused at once, not after waiting
    assert first.poll() is None  # the first is still training
    first.send_signal(signal.SIGINT)  # it stops cleanly at the next step
    _, err = first.communicate(timeout=300)
    assert first.returncode == 130, err
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, len(epochs) + 1)) and epochs[-1] >= 2
