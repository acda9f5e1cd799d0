"""A user's own model and guide trained through ``fit``: checkpoints, exact resume after SIGKILL,
the evaluator (the README's script, in new processes)."""

import json
import pathlib
import re
import signal
import subprocess
import sys
import time

import torch

from pyrovae.runs.checkpoint import load_checkpoint

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _script(tmp_path):
    code = re.search(r"```python fit_own.py\n(.*?)```", README.read_text(), flags=re.S).group(1)
    path = tmp_path / "fit_own.py"
    path.write_text(code)
    return path


def _metrics(run):
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines if line.endswith("}")]


def test_a_users_modules_through_fit_resume_exactly_after_sigkill(tmp_path):
    script, epochs = _script(tmp_path), "6"
    straight = subprocess.run([sys.executable, str(script), str(tmp_path / "straight"), epochs],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr
    match = re.search(r"test log-likelihood (-?\d+\.\d+) nats, ELBO (-?\d+\.\d+)", straight.stdout)
    assert match and float(match.group(2)) <= float(match.group(1)) < 0, straight.stdout
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(script), str(run), epochs], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(_metrics(run)) < 2:
        assert proc.poll() is None and time.time() < deadline, "finished before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    killed_at = load_checkpoint(str(run / "last.pt"))["epoch"]
    assert killed_at < int(epochs)
    resumed = subprocess.run([sys.executable, str(script), str(run), epochs], capture_output=True, text=True,
                             timeout=300, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_checkpoint(str(tmp_path / "straight" / "last.pt")), load_checkpoint(str(run / "last.pt"))
    assert a["epoch"] == b["epoch"] == int(epochs) and a["step"] == b["step"]
    for part in ("model", "guide"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)
    assert _metrics(run) == _metrics(tmp_path / "straight")
    assert resumed.stdout == straight.stdout  # the same best epoch, log-likelihood and ELBO


def test_import_pyrovae_is_light_and_names_the_entry_points():
    code = ("import sys, pyrovae; assert 'torch' not in sys.modules and 'pyro' not in sys.modules; "
            "from pyrovae import fit, train, evaluate, load_run, TrainConfig; "
            "print(fit.__module__, train.__module__, evaluate.__module__, TrainConfig().epochs)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["pyrovae.training.loop", "pyrovae.runs.train", "pyrovae.analysis.evaluate", "200"]
