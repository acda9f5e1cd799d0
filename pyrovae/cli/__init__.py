"""Command line: ``pyrovae train``, ``evaluate``, ``plot``, ``impute``, ``posterior-check``,
``compare-inference``, ``compare-estimators`` and ``bench``.

Errors the user can fix print one line, ``pyrovae: error: ...``, and exit with status 2;
a diverged run exits with status 1, an interrupted one with 130.
"""

import shlex
import signal
import sys
import threading
import warnings

from pyrovae.cli.commands import COMMANDS
from pyrovae.cli.parser import build_parser
from pyrovae.errors import Interrupted, PyrovaeError, TrainingDiverged

__all__ = ["main", "build_parser"]


def _interrupted(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"pyrovae: warning: {message}", file=sys.stderr if file is None else file)


def main(argv=None):
    """Run one command; returns the exit status (0, 1 for a diverged run, 2 for an error the user
    can fix, 130 after SIGINT or SIGTERM)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, or a usage error argparse printed
        return done.code
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():  # SIGTERM, like Ctrl-C, says what was kept
        signal.signal(signal.SIGTERM, _interrupted)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            return COMMANDS[args.command](args)
    except Interrupted as err:
        print(f"pyrovae: {err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt as err:
        name = str(err) or "SIGINT"
        print(f"pyrovae: {name}: {args.command} stopped; its files are written whole or not at all, so nothing "
              f"half-written was kept; run it again with: pyrovae {shlex.join(argv)}", file=sys.stderr)
        return 130
    except OSError as err:  # outside a run directory's own handling: still one line, naming the path
        print(f"pyrovae: error: {err.strerror or err}" + (f": {err.filename}" if err.filename else ""), file=sys.stderr)
        return 2
    except PyrovaeError as err:
        print(f"pyrovae: error: {err}", file=sys.stderr)
        return 1 if isinstance(err, TrainingDiverged) else 2
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)
