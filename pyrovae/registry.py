"""Lookup in the explicit registry tables.

Each package keeps its own table, one line per entry, for example
``pyrovae.inference.elbos.ELBOS`` or ``pyrovae.models.PRIORS``. Nothing
registers itself at import: adding a component means adding its line.
"""

from pyrovae.errors import UnknownNameError

__all__ = ["lookup"]


def lookup(table, name, kind):
    """Return ``table[name]``.

    :param dict table: a registry table, name -> entry.
    :param str name: the requested name.
    :param str kind: what the table holds ("guide", "ELBO", ...), used in the message.
    :raises UnknownNameError: (a ``KeyError``) naming the valid entries.
    """
    try:
        return table[name]
    except KeyError:
        valid = ", ".join(sorted(table))
        raise UnknownNameError(f"unknown {kind} {name!r}; valid names: {valid}") from None
