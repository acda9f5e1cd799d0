"""Checks of Monte Carlo estimates against exact values, with the standard error computed from
the estimates themselves."""

import math

__all__ = ["assert_mean_within"]


def assert_mean_within(estimates, truth, k=5):
    """Assert that the rows of ``estimates`` (R, ...), independent estimates of ``truth`` (...),
    have a mean within ``k`` standard errors of it, the standard error being the rows' standard
    deviation over sqrt(R). Returns that standard error (...), for the caller's power check."""
    estimates = estimates.double()
    se = estimates.std(0) / math.sqrt(len(estimates))
    error = estimates.mean(0) - truth.double()
    assert (error.abs() < k * se).all(), (error, se)
    return se
