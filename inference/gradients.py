r"""Monte Carlo statistics of stochastic gradients: mean, variance, signal-to-noise, bias tests.

For an estimator :math:`\hat g` of a gradient over a parameter group with P coordinates,
``R`` independent draws (parameters frozen) give

* the mean :math:`\bar g` (reported by its Euclidean norm),
* the variance :math:`V = \operatorname{tr}\operatorname{Cov}[\hat g] = \sum_j \operatorname{Var}[\hat g_j]`,
* the signal-to-noise ratio :math:`\lVert \bar g \rVert / \sqrt V`, and the median over coordinates
  of :math:`|\bar g_j| / \operatorname{sd}[\hat g_j]`, the coordinate-wise SNR of Rainforth et al.
  (2018, "Tighter Variational Bounds are Not Necessarily Better", arXiv:1802.04537, eq. 5).

Bias tests compare two estimators' means along a fixed unit direction u: the draws'
projections :math:`u^\top \hat g` are scalars, and
:math:`z = (\bar a - \bar b) / \sqrt{s_a^2 / R_a + s_b^2 / R_b}` is standard normal when both
estimators are unbiased for the same gradient (two-sample z-test; the CLT applies to the
scalar projections). Directions are fixed before the draws: the mean of a pilot run of the
reference estimator (the direction that matters for optimization) and a random direction.
"""

import math
import time

import torch

__all__ = ["GROUPS", "parameter_groups", "GradientMoments", "draw_gradients", "z_score", "bias_norm"]

GROUPS = ("encoder", "decoder", "prior")


def parameter_groups(model, guide):
    """The parameters of ``model`` and ``guide`` by group, empty groups left out.

    ``encoder``: the guide's parameters except its ``baseline`` networks (fitted by their own
    loss); ``prior``: the model's ``prior`` module; ``decoder``: the rest of the model.

    :returns: dict group name -> list of parameters.
    """
    groups = {
        "encoder": [p for name, p in guide.named_parameters() if not name.startswith("baseline")],
        "decoder": [p for name, p in model.named_parameters() if not name.startswith("prior.")],
        "prior": [p for name, p in model.named_parameters() if name.startswith("prior.")],
    }
    return {name: params for name, params in groups.items() if params}


def _flat_grad(params):
    parts = []
    for p in params:
        g = p.grad
        if g is None:
            g = torch.zeros_like(p)
        elif g.is_sparse:
            g = g.to_dense()
        parts.append(g.reshape(-1))
    return torch.cat(parts).double()


class GradientMoments:
    """Running mean and coordinate variances of one group's gradient draws (Welford's update, in
    float64), and the draws' projections onto fixed directions.

    :param int size: P, the group's number of coordinates.
    :param dict directions: name -> unit vector of shape (P,).
    """

    def __init__(self, size, directions=None, device="cpu"):
        self.count = 0
        self.nonfinite = 0  # draws left out because a coordinate was NaN or infinite
        self.mean = torch.zeros(size, dtype=torch.float64, device=device)
        self._m2 = torch.zeros_like(self.mean)
        self.directions = {k: u.to(self.mean) for k, u in (directions or {}).items()}
        self.projections = {k: [] for k in self.directions}

    def add(self, g):
        """Add one draw g, shape (P,); a draw with a non-finite coordinate is counted and left out."""
        if not bool(torch.isfinite(g).all()):
            self.nonfinite += 1
            return
        self.count += 1
        delta = g - self.mean
        self.mean += delta / self.count
        self._m2 += delta * (g - self.mean)
        for k, u in self.directions.items():
            self.projections[k].append(float(u @ g))

    @property
    def variances(self):
        """Unbiased coordinate variances, shape (P,)."""
        return self._m2 / max(self.count - 1, 1)

    def summary(self):
        """``{"mean_norm", "variance", "snr", "snr_median_coordinate", "num_draws"}`` (see the module doc);
        a zero-variance estimator (exact) has SNR ``None``, meaning infinite."""
        var = self.variances
        total = float(var.sum())
        sd = var.sqrt()
        noisy = sd > 0
        coordinate = (self.mean[noisy].abs() / sd[noisy]) if bool(noisy.any()) else None
        norm = float(self.mean.norm())
        return {
            "mean_norm": norm,
            "variance": total,
            "snr": norm / math.sqrt(total) if total > 0 else None,
            "snr_median_coordinate": float(coordinate.median()) if coordinate is not None else None,
            "num_draws": self.count,
            "nonfinite_draws": self.nonfinite,
        }

    def projection(self, name):
        """Mean and variance of the projections onto direction ``name``."""
        values = torch.tensor(self.projections[name], dtype=torch.float64)
        return float(values.mean()), float(values.var()) if len(values) > 1 else 0.0


def draw_gradients(estimate, groups, num_draws, warmup=0, directions=None, progress=None, scale=1.0):
    """Draw ``num_draws`` gradients of the parameter ``groups``, parameters untouched.

    :param estimate: a callable that computes one stochastic gradient into the parameters' ``.grad``
        (it is called after the gradients are zeroed).
    :param dict groups: name -> list of parameters, as from :func:`parameter_groups`.
    :param int warmup: draws made first and discarded (lets decaying-average baselines settle).
    :param dict directions: group name -> {direction name -> unit vector (P,)} for the projections.
    :param progress: an optional callable run after every draw (a progress bar's ``update``).
    :param float scale: a factor applied to every draw (e.g. 1 / B for per-datapoint gradients).
    :returns: ``(moments, seconds)``: dict group -> :class:`GradientMoments`, and the wall-clock
        seconds of each draw (a list of ``num_draws`` floats).
    :raises ValueError: for fewer than 2 draws.
    """
    if num_draws < 2:
        raise ValueError(f"need at least 2 gradient draws for a variance, got {num_draws}")
    params = [p for ps in groups.values() for p in ps]
    directions = directions or {}
    moments = {name: GradientMoments(sum(p.numel() for p in ps), directions.get(name), ps[0].device)
               for name, ps in groups.items()}
    seconds = []
    for i in range(warmup + num_draws):
        for p in params:
            p.grad = None
        t0 = time.perf_counter()
        estimate()
        elapsed = time.perf_counter() - t0
        if i < warmup:
            continue
        seconds.append(elapsed)
        for name, ps in groups.items():
            moments[name].add(_flat_grad(ps) * scale)
        if progress is not None:
            progress()
    for p in params:
        p.grad = None
    return moments, seconds


def z_score(a, b, direction):
    """The two-sample z statistic of the means of :class:`GradientMoments` ``a`` and ``b`` projected
    onto ``direction`` (see the module doc); 0 when both are exact and equal, ``inf`` when both are
    exact and differ."""
    mean_a, var_a = a.projection(direction)
    mean_b, var_b = b.projection(direction)
    se = math.sqrt(var_a / a.count + var_b / b.count)
    if se == 0:
        return 0.0 if mean_a == mean_b else math.copysign(math.inf, mean_a - mean_b)
    return (mean_a - mean_b) / se


def bias_norm(a, reference):
    r"""The estimated norm of the bias of ``a`` against ``reference`` (both :class:`GradientMoments`):
    :math:`\sqrt{\max(0, \lVert \bar a - \bar r \rVert^2 - V_a / R_a - V_r / R_r)}`, the squared
    distance of the means less its expectation under no bias."""
    distance = float((a.mean - reference.mean).pow(2).sum())
    noise = float(a.variances.sum()) / a.count + float(reference.variances.sum()) / reference.count
    return math.sqrt(max(0.0, distance - noise))
