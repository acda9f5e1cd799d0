"""The base class of pyrovae's models, guides, priors and likelihoods: module-local parameters
whatever Pyro's global setting.

Pyro's ``module_local_params`` setting decides where a :class:`~pyro.nn.PyroModule` keeps its
parameters: in Pyro's global parameter store (the default, ``False``), or in the module itself
(``True``). pyrovae's modules always keep them in the module, so two models built in one
process never share parameters by name and every ``torch.optim`` optimizer trains them; but
importing pyrovae leaves the setting alone, so the user's own Pyro code behaves as it does
without pyrovae. :class:`LocalModule` turns the setting on while its own modules run, and
restores it when they return (:class:`LocalContext`), and marks each parameter with the ``unconstrained``
reference that Pyro's ``SVI`` reads from ``param`` sites, so stock ``SVI`` + ``pyro.optim``
trains these modules too.
"""

import functools
import weakref

import pyro
from pyro.nn import PyroModule
from pyro.nn.module import _Context

__all__ = ["LocalModule", "LocalContext", "localize_", "private_param_store", "mark_unconstrained_"]


def mark_unconstrained_(module):
    """Give each parameter of ``module`` (recursively) the ``unconstrained`` weak reference to
    itself that Pyro attaches to the values of ``pyro.param`` sites. ``SVI.step`` collects the
    tensors to optimize as ``site["value"].unconstrained()``; under module-local parameters a
    plain ``nn.Parameter`` is reported as its own value, without that reference."""
    for p in module.parameters():
        ref = p.__dict__.get("unconstrained")
        if ref is None or ref() is not p:  # a deep copy keeps the original's reference
            p.unconstrained = weakref.ref(p)


class LocalContext(_Context):
    """The call context that a PyroModule tree shares (Pyro's ``_Context``), with module-local
    parameters switched on while any module of the tree runs: a call of the root, or a direct call
    of a submodule such as ``guide.encoder(x)``. The previous setting is restored when the
    outermost call returns.

    Unlike Pyro's own module-local context it leaves Pyro's global parameter store alone: Pyro
    swaps the store for the module's while the module runs, and the swap strips the
    ``unconstrained`` references from the store's tensors (``ParamStoreDict.get_state``), which
    would break a stock ``SVI`` step whose guide (an ``AutoNormal``, say) keeps its parameters
    there. pyrovae's modules make no raw ``pyro.param`` statements, so nothing needs the swap.
    """

    def __init__(self):
        super().__init__()
        self.param_state = {"params": {}, "constraints": {}}  # stays empty: read by Pyro's checks

    def __enter__(self):
        if not self.active:
            self._previous = pyro.settings.get("module_local_params")
            pyro.settings.set(module_local_params=True)
        self.active += 1
        self.used = True

    def __exit__(self, *exc):
        self.active -= 1
        if not self.active:
            self.cache.clear()
            pyro.settings.set(module_local_params=self._previous)


class LocalModule(PyroModule):
    """A :class:`~pyro.nn.PyroModule` whose tree runs with module-local parameters
    (:class:`LocalContext`), whatever Pyro's global setting.

    Subclass it as you would ``PyroModule``; submodules attached to it share its context.
    """

    def __init__(self, name=""):
        super().__init__(name)
        self._pyro_context = LocalContext()

    def __call__(self, *args, **kwargs):
        mark_unconstrained_(self)
        return super().__call__(*args, **kwargs)


def localize_(module):
    """Give every PyroModule of ``module``'s tree a :class:`LocalContext` in place of Pyro's own:
    modules that shared a context share the new one. Applied to the networks pyrovae builds and to
    the models and guides of :func:`pyrovae.build.build_model_and_guide` (plugins written with
    plain ``PyroModule`` included), so they keep their parameters to themselves too.

    :returns: ``module``.
    """
    contexts = {}
    for m in module.modules():
        if isinstance(m, PyroModule) and not isinstance(m._pyro_context, LocalContext):
            old = m._pyro_context
            m._pyro_context = contexts.setdefault(id(old), LocalContext())
    return module


def private_param_store(fn):
    """Decorate ``fn`` to run with a private, empty Pyro parameter store (``ParamStoreDict.scope``):
    what it puts in the store (the decaying averages of ``TraceGraph_ELBO``'s baselines) and what it
    clears stay out of the caller's."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with pyro.get_param_store().scope():
            return fn(*args, **kwargs)

    return wrapper
