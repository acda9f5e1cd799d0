"""Variational families (guides), ELBO estimators and inference-side analysis.

Registry tables: :data:`pyrovae.inference.guides.GUIDES` and
:data:`pyrovae.inference.elbos.ELBOS`.
"""

from pyrovae.inference.elbos import ELBOS, make_elbo
from pyrovae.inference.guides import GUIDES

__all__ = ["ELBOS", "GUIDES", "make_elbo"]
