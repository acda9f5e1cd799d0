"""Argument types and the options generated from :class:`~pyrovae.config.TrainConfig`'s fields.

Every numeric option is checked by :mod:`pyrovae.checks` (the same checks as the Python API),
so a bad value is one line naming the option, the accepted range and the value.
"""

import argparse
import dataclasses
import json

from pyrovae.checks import check_float, check_int, check_seed
from pyrovae.config import TrainConfig
from pyrovae.errors import ConfigError
from pyrovae.nets import parse_hidden

__all__ = ["POSITIVE", "NONNEGATIVE", "SEED", "POSITIVE_FLOAT", "NONNEGATIVE_FLOAT", "number", "names", "floats",
           "add_config_options", "run_options", "add_ais_options", "ais_options"]


def number(check, convert=int, **bounds):
    """An argparse type: ``convert`` the text, then ``check`` it (see :mod:`pyrovae.checks`)."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if convert is int else 'a number'}, "
                                             f"got {text!r}") from None
        try:
            return check("the value", value, **bounds)
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return parse


POSITIVE = number(check_int, minimum=1)
NONNEGATIVE = number(check_int, minimum=0)
SEED = number(check_seed)
POSITIVE_FLOAT = number(check_float, float, low=0, low_open=True)
NONNEGATIVE_FLOAT = number(check_float, float, low=0)


def names(text):
    return [t.strip() for t in text.split(",") if t.strip()]


def floats(text):
    try:
        return tuple(float(t) for t in names(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _option_value(text):
    """``16`` -> 16, ``0.5`` -> 0.5, ``true`` -> True, ``16,32`` or ``[16,32]`` -> [16, 32], else the text."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    if "," in text:
        return [_option_value(t.strip()) for t in text.split(",") if t.strip()]
    return text


def _key_value(text):
    """``KEY=VALUE`` -> {KEY: VALUE} (see :func:`_option_value`)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. num_components=100), got {text!r}")
    return {key.strip(): _option_value(value.strip())}


class _MergeOptions(argparse.Action):
    """``--prior-options a=1 b=2 --prior-options c=3`` -> {"a": 1, "b": 2, "c": 3}."""

    def __call__(self, parser, namespace, values, option_string=None):
        merged = dict(getattr(namespace, self.dest) or {})
        for item in values:
            merged.update(item)
        setattr(namespace, self.dest, merged)


def _hidden(text):
    try:
        return parse_hidden(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_config_options(parser, fields=None, defaults=TrainConfig()):
    """Add ``--field-name`` for each :class:`~pyrovae.config.TrainConfig` field (or those named in
    ``fields``), typed by the field and with the field's help. Defaults are None, so that a
    command can tell the options given (``--resume`` keeps the saved ones).
    """
    for f in dataclasses.fields(TrainConfig):
        if fields is not None and f.name not in fields:
            continue
        flag, default = "--" + f.name.replace("_", "-"), getattr(defaults, f.name)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        help = f.metadata["help"] + ("" if f.type is dict else f" (default {shown})")
        if f.type is bool:
            parser.add_argument(flag, action="store_const", const=True, help=help)
        elif "choices" in f.metadata:  # --jit alone means const ("on"); --jit off
            parser.add_argument(flag, nargs="?", choices=f.metadata["choices"], const=f.metadata.get("const"),
                                help=help)
        elif f.type is dict:
            parser.add_argument(flag, type=_key_value, nargs="+", action=_MergeOptions, metavar="KEY=VALUE",
                                help=help + " (values: numbers, true/false, lists as 16,32; checked against the "
                                            "constructor)")
        else:
            kind = {int: int, float: float, tuple: _hidden}.get(f.type, str)
            parser.add_argument(flag, type=kind, help=help)


def run_options(p, split=True, seed=True, device=True):
    """The options every command on a saved run shares."""
    if split:
        p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    if seed:
        p.add_argument("--seed", type=SEED, default=0, help="random seed; the same seed gives the same numbers")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"])
    if device:
        p.add_argument("--device", default="cpu")


# the AIS settings (pyrovae.inference.ais.AISOptions) as options: field -> (flag, type, help)
AIS_FLAGS = {
    "num_steps": ("--num-steps", POSITIVE, "T, intermediate distributions"),
    "num_chains": ("--num-chains", POSITIVE, "C, independent AIS chains per datapoint"),
    "num_leapfrog": ("--num-leapfrog", POSITIVE, "leapfrog steps per HMC transition"),
    "start": ("--ais-start", str, "pi_0: the guide's q(z|x) or the prior p(z)"),
    "schedule": ("--schedule", str, "path of inverse temperatures: sigmoid or linear"),
    "target_acceptance": ("--target-acceptance", number(check_float, float, low=0, high=1, low_open=True,
                                                         high_open=True), "HMC acceptance the first pass adapts to"),
    "step_size": ("--step-size", POSITIVE_FLOAT, "the first pass's starting HMC step size"),
    "adapt_chains": ("--adapt-chains", POSITIVE, "chains per datapoint in the step-size adaptation pass"),
}


def add_ais_options(parser):
    """The :class:`~pyrovae.inference.ais.AISOptions` fields as an option group, defaults shown."""
    from pyrovae.analysis.ais_options import SCHEDULES, START, AISOptions

    group = parser.add_argument_group("annealed importance sampling (see pyrovae.inference.ais)")
    defaults = AISOptions()
    for field, (flag, kind, help) in AIS_FLAGS.items():
        choices = {"start": START, "schedule": SCHEDULES}.get(field)
        group.add_argument(flag, dest=f"ais_{field}", type=kind, choices=choices, default=getattr(defaults, field),
                           help=f"{help} (default {getattr(defaults, field)})")


def ais_options(args):
    """The :class:`~pyrovae.inference.ais.AISOptions` of parsed arguments."""
    from pyrovae.analysis.ais_options import AISOptions

    return AISOptions(**{field: getattr(args, f"ais_{field}") for field in AIS_FLAGS})
