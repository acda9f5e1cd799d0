"""Checks of numeric options, shared by the command line and the Python API.

Each check returns the value (as the right type) or raises :class:`~pyrovae.errors.ConfigError`
with a message that names the option, the accepted range and the value given.
"""

import math

from pyrovae.errors import ConfigError

__all__ = ["check_int", "check_float", "check_seed", "SEED_LIMIT"]

SEED_LIMIT = 2**63  #: seeds are integers in [0, 2**63): torch's generator takes 64 bits, NumPy's 32 (seed mod 2**32)


def check_int(name, value, minimum=None):
    """``value`` as an int, at least ``minimum``.

    :raises ConfigError: if it is not an integer (a bool is not), or is below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ConfigError(f"{name} must be an integer{_range(minimum)}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be an integer{_range(minimum)}, got {value}")
    return value


def check_float(name, value, low=None, high=None, low_open=False, high_open=False):
    """``value`` as a finite float in the interval from ``low`` to ``high`` (open ends where asked).

    :raises ConfigError: if it is not a finite number, or lies outside the interval.
    """
    if high is None:
        bounds = "" if low is None else f" {'>' if low_open else '>='} {low:g}"
    else:
        bounds = (f" in {'(' if low_open else '['}{'-inf' if low is None else f'{low:g}'}, {high:g}"
                  f"{')' if high_open else ']'}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number{bounds}, got {value!r}")
    if ((low is not None and (value < low or (low_open and value == low)))
            or (high is not None and (value > high or (high_open and value == high)))):
        raise ConfigError(f"{name} must be a number{bounds}, got {value:g}")
    return float(value)


def check_seed(name, value):
    """A seed: an integer in [0, 2**63).

    :raises ConfigError: otherwise.
    """
    value = check_int(name, value, 0)
    if value >= SEED_LIMIT:
        raise ConfigError(f"{name} must be an integer in [0, 2**63), got {value}")
    return value


def _range(minimum):
    if minimum is None:
        return ""
    return {0: " >= 0", 1: " >= 1 (a positive integer)"}.get(minimum, f" >= {minimum}")
