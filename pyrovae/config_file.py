"""Configuration files of ``pyrovae train --config FILE`` and ``pyrovae sweep FILE``.

A file holds :class:`~pyrovae.config.TrainConfig` options by their field names: TOML (read with
the standard library's ``tomllib``) or JSON, so a run's saved ``config.json`` reruns it::

    # digits.toml
    data = "digits"
    guide = "iaf"
    hidden = [200, 200]
    epochs = 100
    [prior_options]            # a component's keyword options are a table
    num_components = 20

Options given on the command line override the file's. Relative paths in the file (``data_dir``,
a ``.npy``/``.npz`` ``data`` file, a ``path/to/file.py:Name`` component) are relative to the
file's folder, so a config file works from any working directory. A sweep file adds a ``[sweep]``
table (see :mod:`pyrovae.runs.sweep`), which ``train`` refuses.
"""

import json
import os

from pyrovae.config import RECORDED, TrainConfig
from pyrovae.errors import ConfigError
from pyrovae.registry import is_import_string

__all__ = ["read_config_file", "resolve_paths", "COMPONENT_KEYS"]

COMPONENT_KEYS = ("model", "prior", "likelihood", "guide", "net", "elbo")


def _parse(path):
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as err:
        raise ConfigError(f"cannot read the configuration file {path}: {err.strerror or err}") from None
    if path.endswith(".toml"):
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib
        try:
            return tomllib.loads(text.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: not valid TOML ({err})") from None
    if path.endswith(".json"):
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object of options, got {type(data).__name__}")
        return data
    raise ConfigError(f"{path}: a configuration file must be .toml or .json")


def resolve_paths(options, folder):
    """``options`` with relative paths made absolute against ``folder`` (see the module doc)."""
    out = dict(options)

    def absolute(p):
        return p if os.path.isabs(p) else os.path.normpath(os.path.join(folder, p))

    if isinstance(out.get("data_dir"), str):
        out["data_dir"] = absolute(out["data_dir"])
    if isinstance(out.get("data"), str) and out["data"].endswith((".npy", ".npz")):
        out["data"] = absolute(out["data"])
    for key in COMPONENT_KEYS:
        name = out.get(key)
        if is_import_string(name) and name.rsplit(":", 1)[0].endswith(".py"):
            path, attr = name.rsplit(":", 1)
            out[key] = f"{absolute(path)}:{attr}"
    return out


def read_config_file(path, allow=()):
    """The options in ``path`` (a dict of :class:`~pyrovae.config.TrainConfig` field -> value,
    paths resolved), and the tables named in ``allow`` (e.g. ``("sweep",)``) as a second dict.

    :raises ConfigError: naming the file: unreadable, not TOML/JSON, an unknown key, a value of
        the wrong type or out of range (``digits.toml: key "latent_dim" must be ...``).
    """
    data = _parse(path)
    extra = {k: data.pop(k) for k in allow if k in data}
    for key in RECORDED:  # a saved config.json records derived facts beside the options
        data.pop(key, None)
    if "sweep" in data:
        raise ConfigError(f"{path} holds a [sweep] table: run it with pyrovae sweep {path}")
    # unknown keys and wrong types name the file; so do ranges (the defaults are in range)
    TrainConfig.from_dict(data, source=path).validate(source=path)
    return resolve_paths(data, os.path.dirname(os.path.abspath(path))), extra
