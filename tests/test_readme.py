"""The README's Python example runs as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no python example"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    match = re.search(r"test log p\(x\) = (-?\d+\.\d+) nats, ELBO = (-?\d+\.\d+)", out)
    assert match, out
    log_px, elbo = map(float, match.groups())
    assert elbo <= log_px < 0


def test_quickstart_has_two_commands():
    text = README.read_text()
    quick = re.search(r"## Quickstart.*?```bash\n(.*?)```", text, flags=re.S).group(1).strip().splitlines()
    assert len(quick) == 2
    assert quick[0].endswith("pyrovae train") and "[test]" in quick[1] and "pytest" in quick[1]


def _bring_your_own():
    text = README.read_text()
    section = text[text.index("## Bring your own"):]
    section = section[:section.index("\n## ", 3)]
    files = dict(re.findall(r"```python (\S+\.py)\n(.*?)```", section, flags=re.S))
    commands = re.findall(r"```bash\n(.*?)```", section, flags=re.S)[0].strip().splitlines()
    return files, commands


def test_readme_bring_your_own_runs_from_the_command_line_and_a_stock_pyro_script(tmp_path):
    """The section's files, written into a new folder; its commands and scripts run there in new
    processes, with fewer epochs and importance samples."""
    import json
    import shlex
    import subprocess
    import sys

    files, commands = _bring_your_own()
    assert set(files) == {"my_parts.py", "fit_my_parts.py", "evaluate_my_parts.py"}
    for name, code in files.items():
        (tmp_path / name).write_text(code)
    epochs = iter(["2", "3"])
    for line in commands:
        args = shlex.split(line)
        assert args[0] == "pyrovae"
        args = [next(epochs) if prev == "--epochs" else "10" if prev == "--num-samples" else a
                for prev, a in zip([None, *args], args)]
        if args[1] == "train":
            args += ["--eval-num-samples", "10"]
        done = subprocess.run([sys.executable, "-m", *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (line, done.stderr)
    run = tmp_path / "runs" / "my-parts"
    config = json.loads((run / "config.json").read_text())
    assert config["prior"] == f"{tmp_path / 'my_parts.py'}:StudentT" and config["net_options"] == {"channels": 16}
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3  # resumed to epoch 3
    assert (run / "samples.png").exists()

    fit = subprocess.run([sys.executable, "fit_my_parts.py", "10"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert fit.returncode == 0, fit.stderr
    assert re.search(r"epoch 10: train ELBO -\d+\.\d+ nats", fit.stdout), fit.stdout
    evaluate = subprocess.run([sys.executable, "evaluate_my_parts.py", "20"], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)
    assert evaluate.returncode == 0, evaluate.stderr
    log_px, se, elbo = map(float, re.search(r"test log-likelihood (-\d+\.\d+) ± (\d+\.\d+) nats, ELBO (-\d+\.\d+)",
                                            evaluate.stdout).groups())
    assert elbo <= log_px < 0 and se > 0
