"""Registries: one explicit table per kind of component, open to the outside.

Each package keeps its own table, one line per entry (``pyrovae.models.PRIORS``,
``pyrovae.inference.GUIDES``, ...). A name is resolved in this order:

1. the table, including entries added in-process with :meth:`Registry.register`;
2. the Python entry points of the kind's group (``pyrovae.priors``, ``pyrovae.guides``,
   ``pyrovae.models``, ``pyrovae.likelihoods``, ``pyrovae.nets``, ``pyrovae.elbos``), which an
   installed package declares in its ``pyproject.toml``::

       [project.entry-points."pyrovae.priors"]
       student-t = "mypkg.priors:StudentT"

3. an import string, ``module:attribute`` (``mypkg.priors:StudentT``) or
   ``path/to/file.py:attribute`` (a file anywhere on disk, imported by path).

The name, not the object, is saved in ``config.json``, so a run rebuilds in a new process
wherever the name resolves there. Component options are keyword arguments of the
constructor (:func:`check_options`): validated against its signature and saved beside the name.
"""

import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import sys

from pyrovae.errors import ConfigError, UnknownNameError

__all__ = ["Registry", "lookup", "check_options", "construct", "is_import_string", "absolute_import_string"]


class PluginError(ConfigError):
    """An import string or entry point that does not load."""


def is_import_string(name):
    """``module:attribute`` or ``path.py:attribute``."""
    return isinstance(name, str) and ":" in name and not name.startswith(":") and not name.endswith(":")


def absolute_import_string(name):
    """``path.py:attribute`` with the path made absolute (so a saved run rebuilds from another
    working directory); other names unchanged."""
    if is_import_string(name):
        path, attr = name.rsplit(":", 1)
        if path.endswith(".py"):
            return f"{os.path.abspath(path)}:{attr}"
    return name


def _import_file(path):
    key = "pyrovae_plugin_" + hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:12]
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[key]
        raise
    return module


def load_import_string(name, kind):
    """The object an import string names.

    :raises PluginError: naming the import string, why it failed and how to make it load.
    """
    path, attr = name.rsplit(":", 1)
    try:
        if path.endswith(".py"):
            if not os.path.isfile(path):
                raise PluginError(f"{kind} {name!r}: no file {path}; give the path of the Python file that defines "
                                  f"{attr}")
            module = _import_file(path)
        else:
            module = importlib.import_module(path)
    except PluginError:
        raise
    except ImportError as err:
        raise PluginError(f"{kind} {name!r}: cannot import {path} ({err}); install the package that provides it "
                          f"(pip install ...) or put its folder on PYTHONPATH, or give a file as "
                          f"path/to/file.py:{attr}") from None
    except Exception as err:
        raise PluginError(f"{kind} {name!r}: importing {path} failed: {type(err).__name__}: {err}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise PluginError(f"{kind} {name!r}: {path} defines no {attr!r}") from None


class Registry(dict):
    """A registry table: name -> component (a class or factory), with the lookup order of the
    module docstring.

    :param str kind: what it holds ("prior", "guide", ...), used in messages.
    :param str group: the entry-point group, e.g. ``"pyrovae.priors"``.
    :param dict entries: the built-in table.
    """

    def __init__(self, kind, group, entries=()):
        super().__init__(entries)
        self.kind = kind
        self.group = group
        self.builtin = tuple(self)  # the table's own lines; later names came from register()

    def register(self, name, component=None, *, replace=False):
        """Add ``component`` under ``name``; usable as a decorator (``@PRIORS.register("t")``).

        :raises ValueError: if ``name`` is taken and ``replace`` is false, or holds a ``:``
            (reserved for import strings).
        """
        if ":" in name:
            raise ValueError(f"{self.kind} names cannot contain ':' (reserved for import strings): {name!r}")

        def add(obj):
            if name in self and self[name] is not obj and not replace:
                raise ValueError(f"{self.kind} {name!r} is already registered; pass replace=True to replace it")
            self[name] = obj
            return obj

        return add if component is None else add(component)

    def unregister(self, name):
        """Remove ``name`` (a name added by :meth:`register`)."""
        self.pop(name, None)

    def entry_points(self):
        """The installed entry points of this kind's group, name -> ``EntryPoint``."""
        return {ep.name: ep for ep in importlib.metadata.entry_points(group=self.group)}

    def names(self):
        """Every name that resolves without an import string: the table's and the entry points'."""
        return sorted(set(self) | set(self.entry_points()))

    def resolve(self, name, kind=None):
        """The component called ``name``; ``kind`` names what is looked up in messages (default
        the registry's kind).

        :raises UnknownNameError: (a ``KeyError``) for an unknown plain name, listing the valid ones.
        :raises PluginError: for an import string or entry point that does not load.
        """
        kind = kind or self.kind
        if name in self:
            return self[name]
        if is_import_string(name):
            return load_import_string(name, kind)
        ep = self.entry_points().get(name) if isinstance(name, str) else None
        if ep is not None:
            try:
                return ep.load()
            except Exception as err:
                raise PluginError(f"{kind} {name!r}: the entry point {ep.value!r} of group {self.group!r} "
                                  f"does not load ({type(err).__name__}: {err}); reinstall the package that "
                                  "declares it") from None
        registered = sorted(set(self) - set(self.builtin))
        installed = sorted(set(self.entry_points()) - set(self))
        listing = ", ".join(sorted(self.builtin))
        listing += f"; registered: {', '.join(registered)}" if registered else ""
        listing += f"; from installed packages: {', '.join(installed)}" if installed else ""
        raise UnknownNameError(f"unknown {kind} {name!r}; valid names: {listing}; or an import string "
                               "module:attribute or path/to/file.py:attribute")


def lookup(table, name, kind):
    """Return the entry ``name`` of ``table`` (a :class:`Registry` resolves entry points and
    import strings too).

    :param dict table: a registry table, name -> entry.
    :param str name: the requested name.
    :param str kind: what the table holds ("guide", "ELBO", ...), used in the message.
    :raises UnknownNameError: (a ``KeyError``) naming the valid entries.
    """
    if isinstance(table, Registry):
        return table.resolve(name, kind)
    try:
        return table[name]
    except KeyError:
        valid = ", ".join(sorted(table))
        raise UnknownNameError(f"unknown {kind} {name!r}; valid names: {valid}") from None


def _options_of(component, fixed):
    """The keyword parameters of ``component``'s constructor after its ``fixed`` leading ones:
    name -> default (``inspect.Parameter.empty`` when required); None if it takes ``**kwargs``."""
    try:
        params = list(inspect.signature(component).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name: p.default for p in params if p.name not in fixed and p.kind is not p.VAR_POSITIONAL}


def _fits(value, default):
    if default is inspect.Parameter.empty or default is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, (tuple, list)):
        return isinstance(value, (tuple, list))
    return isinstance(value, type(default))


def check_options(component, options, kind, name, fixed=()):
    """Check ``options`` (a dict) against the keyword parameters of ``component``'s constructor.

    :param fixed: names of the parameters the builder passes itself (``latent_dim``, ...).
    :raises ConfigError: naming ``--{kind}-options``, the component and its valid options, for an
        unknown option, a value of the wrong type (a default of 3 takes an integer, 0.5 a number,
        (16, 32) a list, True a boolean), or options that are not a dict of names.
    """
    flag = f"--{kind}-options"
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise ConfigError(f"{flag} must map option names to values, got {options!r}")
    accepted = _options_of(component, fixed)
    if accepted is None:
        return dict(options)
    listing = ", ".join(f"{k}={'(required)' if v is inspect.Parameter.empty else repr(v)}"
                        for k, v in accepted.items()) or "none"
    checked = {}
    for key, value in options.items():
        if key in fixed:
            raise ConfigError(f"{flag}: {key} is set by pyrovae for {kind} {name!r}, not an option; its options: "
                              f"{listing}")
        if key not in accepted:
            raise ConfigError(f"{flag}: {kind} {name!r} has no option {key!r}; its options: {listing}")
        if isinstance(accepted[key], (tuple, list)) and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]  # one width: fc=200
        if not _fits(value, accepted[key]):
            raise ConfigError(f"{flag}: {key}={value!r} does not fit {kind} {name!r}, whose default is "
                              f"{accepted[key]!r}; its options: {listing}")
        checked[key] = value
    return checked


def construct(table, name, kind, *args, options=None, fixed=(), **builder_kwargs):
    """Resolve ``name`` in ``table`` and call it with ``*args``, the builder's keywords (passed
    only where the constructor accepts them) and the user's checked ``options``.

    :param tuple fixed: the constructor's parameters that ``args`` fill, by name.
    :raises UnknownNameError, PluginError, ConfigError: see :func:`lookup`, :func:`check_options`.
    """
    component = lookup(table, name, kind)
    options = check_options(component, options or {}, kind, name, fixed=tuple(fixed) + tuple(builder_kwargs))
    accepted = _options_of(component, ())
    given = {k: v for k, v in builder_kwargs.items() if accepted is None or k in accepted}
    try:
        return component(*args, **given, **options)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError) or not options:
            raise
        raise ConfigError(f"{kind} {name!r} could not be built with options {options}: {err}") from None
