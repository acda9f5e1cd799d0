"""The mean of per-datapoint values and its standard error, as every report gives them."""

import math

import torch

__all__ = ["mean_stderr"]


def mean_stderr(values):
    """``(mean, standard error)`` of per-datapoint values, as floats: the sample standard
    deviation (N - 1 in the denominator) over sqrt(N), NaN for a single value.

    :param values: a tensor of shape (N,), or a list of such tensors (concatenated first).
    """
    t = (torch.cat(list(values)) if isinstance(values, (list, tuple)) else values).double()
    n = len(t)
    return float(t.mean()), float(t.std() / math.sqrt(n)) if n > 1 else math.nan
