"""pyrovae: variational autoencoders as Pyro model/guide pairs.

Models live in :mod:`pyrovae.models`, guides and estimators in
:mod:`pyrovae.inference`; this package holds the glue (data, training,
checkpoints, evaluation, CLI).

Importing pyrovae sets Pyro's ``module_local_params`` setting: every
:class:`~pyro.nn.PyroModule` keeps its parameters to itself instead of in
Pyro's global parameter store, so models and guides behave like ordinary
``torch.nn.Module`` s and train with any ``torch.optim`` optimizer.
"""

import pyro

pyro.settings.set(module_local_params=True)

__version__ = "0.1.0"
