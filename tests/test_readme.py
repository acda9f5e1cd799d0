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
