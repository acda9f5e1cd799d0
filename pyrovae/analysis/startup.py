"""Start-up time of the command line: ``pyrovae --help`` and an argument error
(``pyrovae train --epochs -1``) against ``python -c "import torch, pyro"``, the floor any
pyrovae command pays. Each row runs in a fresh process, round-robin, so load on the machine
falls on every row alike; the ratio is the median of the per-round ratios."""

import statistics
import subprocess
import sys
import time

__all__ = ["STARTUP_ROWS", "time_startup"]

STARTUP_ROWS = {
    'reference: python -c "import torch, pyro"': ["-c", "import torch, pyro"],
    "pyrovae --help": ["-m", "pyrovae", "--help"],
    "pyrovae train --epochs -1 (an argument error)": ["-m", "pyrovae", "train", "--epochs", "-1"],
}


def time_startup(repeats=5):
    """Rows of median wall-clock seconds and ratios to the first row over ``repeats`` rounds."""
    times = {label: [] for label in STARTUP_ROWS}
    for _ in range(repeats):
        for label, args in STARTUP_ROWS.items():
            t0 = time.perf_counter()
            subprocess.run([sys.executable, *args], capture_output=True, timeout=300)
            times[label].append(time.perf_counter() - t0)
    reference = times[next(iter(times))]
    return [{"row": label, "seconds_median": statistics.median(t),
             "ratio": statistics.median(a / b for a, b in zip(t, reference))} for label, t in times.items()]
