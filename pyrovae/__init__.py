"""pyrovae: variational autoencoders as Pyro model/guide pairs.

Models live in :mod:`pyrovae.models`, guides and estimators in :mod:`pyrovae.inference`; the
training loop in :mod:`pyrovae.training`, run directories in :mod:`pyrovae.runs`, analyses in
:mod:`pyrovae.analysis` and the command line in :mod:`pyrovae.cli`.

The main entry points are attributes here, imported on first use (``import pyrovae`` itself
loads nothing heavy): :func:`pyrovae.train` (the ``pyrovae train`` pipeline),
:func:`pyrovae.fit` (the loop, for any model and guide), :func:`pyrovae.evaluate` (the IWAE
evaluator and diagnostics), :func:`pyrovae.load_run` and :class:`pyrovae.TrainConfig`.

Importing pyrovae changes no Pyro setting and no global state. pyrovae's own modules
keep their parameters to themselves whatever Pyro's ``module_local_params`` setting
(:class:`pyrovae.local.LocalModule`), so they train with any ``torch.optim`` optimizer,
and with stock ``SVI`` + ``pyro.optim`` too.
"""

import importlib

__version__ = "0.1.0"

_API = {"train": "pyrovae.runs.train", "fit": "pyrovae.training.loop", "evaluate": "pyrovae.analysis.evaluate",
        "load_run": "pyrovae.runs.load", "TrainConfig": "pyrovae.config"}

__all__ = list(_API)


def __getattr__(name):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'pyrovae' has no attribute {name!r}")
