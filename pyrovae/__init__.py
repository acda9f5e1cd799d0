"""pyrovae: variational autoencoders as Pyro model/guide pairs.

Models live in :mod:`pyrovae.models`, guides and estimators in
:mod:`pyrovae.inference`; this package holds the glue (data, training,
checkpoints, evaluation, CLI).

Importing pyrovae changes no Pyro setting and no global state. pyrovae's own modules
keep their parameters to themselves whatever Pyro's ``module_local_params`` setting
(:class:`pyrovae.local.LocalModule`), so they train with any ``torch.optim`` optimizer,
and with stock ``SVI`` + ``pyro.optim`` too.
"""

__version__ = "0.1.0"
