r"""Annealed importance sampling (AIS) of log p(x) with HMC transitions, and its reverse.

For one datapoint x the path of unnormalized densities

.. math:: \pi_\beta(z) = \pi_0(z)^{1-\beta}\, p(x, z)^{\beta}, \qquad
          0 = \beta_0 < \beta_1 < \dots < \beta_T = 1,

runs from a normalized start :math:`\pi_0` (the guide's q(z|x), or the prior p(z)) to the
joint. **Forward AIS** (Neal 2001, "Annealed importance sampling", arXiv:physics/9803008,
eq. 3): draw :math:`z \sim \pi_0`; for t = 1..T add
:math:`(\beta_t - \beta_{t-1})\,[\log p(x, z) - \log \pi_0(z)]` to the log weight, then move z
with a transition that leaves :math:`\pi_{\beta_t}` invariant (none after the last level).
:math:`E[w] = p(x)`, so with C independent chains
:math:`\log \hat p(x) = \log \frac1C \sum_c w_c` is a stochastic lower bound of log p(x)
(Jensen), exact as T grows. Wu, Burda, Salakhutdinov & Grosse (2017, "On the quantitative
analysis of decoder-based generative models", arXiv:1611.04273) use it to evaluate VAEs;
Cremer, Li & Duvenaud (2018, arXiv:1801.03558) measure their inference gaps with it.

**Reverse AIS** starts at an exact posterior sample :math:`z \sim p(z|x)`, which exists for
data simulated from the model, and runs the path backwards. Its weights estimate
:math:`1/p(x)` without bias, so :math:`-\log \frac1C \sum_c w^{rev}_c` is a stochastic
*upper* bound. Both together are bidirectional Monte Carlo (BDMC: Grosse, Ghahramani & Adams
2015, "Sandwiching the marginal likelihood using bidirectional Monte Carlo",
arXiv:1511.02543, section 4); their gap bounds the error of either on that data.

**Transitions**: Hamiltonian Monte Carlo (Neal 2011, "MCMC using Hamiltonian dynamics",
arXiv:1206.1901) with unit mass, ``num_leapfrog`` steps of Pyro's
:func:`pyro.ops.integrator.velocity_verlet` and a Metropolis correction. Every (chain,
example) pair is its own chain, vectorized: the potential is summed over them, and its
gradient with respect to each pair's z is that pair's own. The step size is per example:
a first pass (``adapt_chains`` chains, its weights discarded) multiplies it by
:math:`\exp(\kappa (a - a^*))` after each transition, a the mean acceptance probability and
:math:`a^*` = ``target_acceptance``; the estimate then runs with that pass's step size at each
level, fixed, so it is plain AIS with no adaptation inside it.

**Schedule**: ``sigmoid`` (Grosse et al. 2015, section 6: :math:`\beta_t \propto
\sigma(\delta (2t/T - 1))`, rescaled to [0, 1], δ = 4) or ``linear``.

Latent sites must be continuous with unconstrained real support (Gaussian latents, flows);
discrete sites that the *model* enumerates (a mixture prior's component) are summed exactly
inside log p(x, z). Densities are per datapoint, as in :mod:`pyrovae.inference.marginal`.
"""

import math
from typing import NamedTuple

import pyro
import pyro.poutine as poutine
import torch
from pyro.ops.integrator import velocity_verlet
from pyro.poutine.enum_messenger import EnumMessenger
from pyro.poutine.util import prune_subsample_sites
from torch.distributions import constraints
from tqdm.auto import tqdm

from pyrovae.analysis.ais_options import SCHEDULES, START, AISOptions
from pyrovae.errors import ConfigError
from pyrovae.inference.local_fit import frozen
from pyrovae.models import guide_discrete_sites

__all__ = ["AISOptions", "AISResult", "ais", "reverse_ais", "schedule", "SCHEDULES", "START"]

SIGMOID_DELTA = 4.0  # Grosse et al. 2015, section 6
ADAPT_RATE = 0.5  # kappa: log step size moves by kappa (a - a*) per transition in the first pass
STEP_SIZE_RANGE = (1e-4, 1.0)


class AISResult(NamedTuple):
    """Per-datapoint results of :func:`ais` (or :func:`reverse_ais`), tensors of shape (N,) in nats."""

    log_likelihood: torch.Tensor  #: log (1/C) sum_c w_c (forward: a lower bound; reverse: an upper bound)
    mc_stderr: torch.Tensor  #: delta-method Monte Carlo standard error of it over the C chains (NaN if C = 1)
    log_weights: torch.Tensor  #: per chain, shape (N, C): log w_c (reverse: -log w_c^rev)
    acceptance: torch.Tensor  #: HMC acceptance probability, averaged over transitions and chains
    step_size: torch.Tensor  #: the adapted step size, averaged over levels
    num_steps: int  #: T
    num_chains: int  #: C


def schedule(num_steps, kind="sigmoid", dtype=torch.float64):
    """The T + 1 inverse temperatures β_0 = 0 < ... < β_T = 1, shape (T + 1,)."""
    if kind not in SCHEDULES:
        raise ConfigError(f"unknown AIS schedule {kind!r}; valid: {', '.join(SCHEDULES)}")
    t = torch.linspace(0, 1, num_steps + 1, dtype=dtype)
    if kind == "linear":
        return t
    s = torch.sigmoid(SIGMOID_DELTA * (2 * t - 1))
    return (s - s[0]) / (s[-1] - s[0])


def check_continuous(model):
    """Raise :class:`ConfigError` unless AIS can anneal this model's latents (no discrete site
    in the guide); returns the latent site names. Supports are checked on the first draw."""
    discrete = guide_discrete_sites(model)
    if discrete:
        raise ConfigError(
            f"AIS moves continuous latents with HMC; this model's guide samples the discrete site(s) "
            f"{', '.join(sorted(discrete))}. Use --method iwae (it enumerates or samples them).")
    return tuple(model.latent_sites)


class _Target:
    """log π_0(z) and log p(x, z), each (C, B), for z a dict site -> (C, B, D); see the module doc."""

    def __init__(self, model, guide, x, num_chains, start, sites, idx=None, num_data=None):
        self.model, self.guide, self.x, self.C = model, guide, x, num_chains
        self.start, self.sites, self.args = start, sites, (idx, num_data)
        self.dim = -(model.max_plate_nesting + 1)
        self._q = None  # the guide's distribution of its one site, traced once (it does not depend on z)

    def _plate(self):
        return pyro.plate("ais_chains", self.C, dim=self.dim)

    def _trace(self, fn, data, enumerate=False):
        fn = poutine.condition(fn, data=data) if data else fn
        if enumerate:
            fn = EnumMessenger(first_available_dim=self.dim - 1)(fn)
        with self._plate():
            trace = poutine.trace(fn).get_trace(self.x, *self.args)
        trace = prune_subsample_sites(trace)
        trace.compute_log_prob()
        return trace

    def draw_start(self):
        """z ~ π_0, a dict site -> (C, B, D), detached."""
        with torch.no_grad():
            if self.start == "prior":  # ancestral: model-enumerated sites are sampled, then dropped
                trace = self._trace(self.model, None)
            else:
                trace = self._trace(self.guide, None)
                if len(self.sites) == 1:
                    self._q = trace.nodes[self.sites[0]]["fn"]
        z = {}
        for name in self.sites:
            site = trace.nodes[name]
            support = site["fn"].support
            while isinstance(support, constraints.independent):
                support = support.base_constraint
            if support is not constraints.real:
                raise ConfigError(f"AIS needs latents with real support; site {name!r} has support {support}")
            z[name] = site["value"].detach().expand(self.C, *site["value"].shape[-2:]).clone()
        return z

    def __call__(self, z):
        shape = (self.C, self.x.shape[0])
        trace = self._trace(self.model, z, enumerate=True)
        prior, lik, dims = 0.0, 0.0, set()
        for name, site in trace.nodes.items():
            if site["type"] != "sample":
                continue
            lp = site["unscaled_log_prob"]
            enum_dim = site["infer"].get("_enumerate_dim")
            if enum_dim is not None:
                dims.add(enum_dim)
            if name in z or enum_dim is not None:
                prior = prior + lp
            else:
                lik = lik + lp
        joint = prior + lik
        if dims:
            joint, prior = joint.logsumexp(sorted(dims)), prior.logsumexp(sorted(dims))
        if self.start == "prior":
            return prior.expand(shape), joint.expand(shape)
        if self._q is not None:
            log_q = self._q.log_prob(z[self.sites[0]])
        else:
            trace = self._trace(self.guide, z)
            log_q = sum(site["unscaled_log_prob"] for name, site in trace.nodes.items()
                        if site["type"] == "sample" and name in z)
        return log_q.expand(shape), joint.expand(shape)


def _kinetic_grad(r):
    return r


def _kinetic(r):
    """0.5 |r|^2 per (chain, example), summed over the sites."""
    return sum(0.5 * (v ** 2).sum(-1) for v in r.values())


def _hmc(target, z, beta, step_size, num_leapfrog, state):
    """One HMC transition leaving π_β invariant for every (chain, example); ``step_size`` (1, B, 1)
    or (C, B, 1). ``state`` holds (log π_0, log p(x, z)) at z, (C, B). Returns (z, state, accept prob)."""
    stash = {}

    def potential(values):
        f0, f1 = target(values)
        stash["f"] = (f0.detach(), f1.detach())
        return -((1 - beta) * f0 + beta * f1).sum()

    r = {name: torch.randn_like(v) for name, v in z.items()}
    energy = -((1 - beta) * state[0] + beta * state[1]) + _kinetic(r)
    z_new, r_new, _, _ = velocity_verlet(z, r, potential, _kinetic_grad, step_size, num_leapfrog)
    f0, f1 = stash["f"]
    energy_new = -((1 - beta) * f0 + beta * f1) + _kinetic(r_new)
    delta = (energy - energy_new).clamp(max=0.0)
    prob = torch.where(torch.isfinite(delta), delta.exp(), torch.zeros_like(delta))  # (C, B)
    accept = torch.rand_like(prob) < prob
    z = {name: torch.where(accept.unsqueeze(-1), z_new[name].detach(), v) for name, v in z.items()}
    state = tuple(torch.where(accept, new, old) for new, old in zip((f0, f1), state))
    return z, state, prob


def _anneal(target, z, betas, step_sizes, num_leapfrog, adapt=None, reverse=False, bar=None):
    """Run the path forwards (or backwards) from z; returns (log weights (C, B), acceptance (B,),
    step sizes per level (T - 1, B)). With ``adapt`` = a* the step size (B,) ``step_sizes`` is
    adapted after each transition and recorded; otherwise ``step_sizes`` is (T - 1, B)."""
    T = len(betas) - 1
    with torch.no_grad():
        state = tuple(t.detach() for t in target(z))
    log_w = torch.zeros_like(state[0], dtype=torch.float64)
    current = step_sizes.clone() if adapt is not None else None
    used, accepted = [], []  # used: the step size at each level 1..T-1, in order (adaptation runs forwards)
    levels = range(T, 0, -1) if reverse else range(1, T + 1)
    for t in levels:
        delta = float(betas[t] - betas[t - 1])
        log_w = log_w + delta * (state[1] - state[0]).double() * (-1 if reverse else 1)
        level = t - 1 if reverse else t  # the transition's level; none at beta = 0 or after beta = 1
        if 0 < level < T:
            eps = current if adapt is not None else step_sizes[level - 1]
            z, state, prob = _hmc(target, z, float(betas[level]), eps.view(1, -1, 1), num_leapfrog, state)
            accepted.append(prob.mean(0))
            if adapt is not None:
                used.append(eps.clone())
                current = (eps * torch.exp(ADAPT_RATE * (prob.mean(0) - adapt))).clamp(*STEP_SIZE_RANGE)
        if bar is not None:
            bar.update(1)
    if adapt is not None:
        step_sizes = torch.stack(used) if used else step_sizes.new_empty(0, len(step_sizes))
    acceptance = torch.stack(accepted).mean(0) if accepted else torch.full(state[0].shape[1:], math.nan)
    return log_w, acceptance, step_sizes


def _summarize(log_w, acceptance, step_sizes, sign=1.0):
    """log (1/C) sum w (times ``sign``) and its delta-method standard error, per datapoint."""
    C = log_w.shape[0]
    estimate = sign * (log_w.logsumexp(0) - math.log(C))
    w = (log_w - log_w.max(0).values).exp()
    stderr = w.std(0) / (w.mean(0) * math.sqrt(C)) if C > 1 else torch.full_like(estimate, math.nan)
    mean_step = step_sizes.double().mean(0) if len(step_sizes) else torch.full_like(estimate, math.nan)
    return estimate, stderr, (sign * log_w).T, acceptance.double(), mean_step


def _run(model, guide, x, z_exact, options, batch_size, idx, progress, desc):
    o = (options or AISOptions()).check()
    sites = check_continuous(model)
    betas = schedule(o.num_steps, o.schedule)
    num_data = getattr(guide, "num_data", None) if idx is not None else None
    parts = []
    bar = tqdm(total=x.shape[0] * o.num_steps * 2, desc=desc, unit="step", unit_scale=True,
               disable=None if progress is None else not progress)
    modules = [m for m in (model, guide) if isinstance(m, torch.nn.Module)]
    with frozen(*modules), torch.enable_grad():
        for begin in range(0, x.shape[0], batch_size):
            xb = x[begin : begin + batch_size]
            ib = None if idx is None else idx[begin : begin + batch_size]
            B = xb.shape[0]
            pilot = _Target(model, guide, xb, o.adapt_chains, o.start, sites, ib, num_data)
            eps0 = torch.full((B,), float(o.step_size), device=x.device)
            _, _, steps = _anneal(pilot, pilot.draw_start(), betas, eps0, o.num_leapfrog,
                                  adapt=o.target_acceptance, bar=_Scaled(bar, B))
            target = _Target(model, guide, xb, o.num_chains, o.start, sites, ib, num_data)
            z = target.draw_start()  # with z_exact, only caches the guide's q(z|x) for log pi_0
            if z_exact is not None:
                z = {name: v[begin : begin + batch_size].to(x.device).expand(o.num_chains, B, v.shape[-1]).clone()
                     for name, v in z_exact.items()}
            log_w, acceptance, _ = _anneal(target, z, betas, steps, o.num_leapfrog, reverse=z_exact is not None,
                                           bar=_Scaled(bar, B))
            parts.append(_summarize(log_w.cpu(), acceptance.cpu(), steps.cpu(), -1.0 if z_exact is not None else 1.0))
    bar.close()
    joined = [torch.cat([p[i] for p in parts]) for i in range(5)]
    return AISResult(*joined, num_steps=o.num_steps, num_chains=o.num_chains)


class _Scaled:
    """Advance a progress bar by ``n`` per update (one level for a batch of n examples)."""

    def __init__(self, bar, n):
        self.bar, self.n = bar, n

    def update(self, k):
        self.bar.update(k * self.n)


def ais(model, guide, x, options=None, batch_size=100, idx=None, progress=False):
    """Forward AIS estimate of log p(x) for every row of ``x`` (N, P); see the module doc.

    :param model: the model; its parameters are held fixed.
    :param guide: the guide: π_0 = q(z|x) with ``options.start = "guide"`` (unused with ``"prior"``).
    :param AISOptions options: T, C, leapfrog steps, start, schedule, adaptation (default :class:`AISOptions`).
    :param int batch_size: examples per chunk; memory grows with ``batch_size * num_chains`` rows.
    :param torch.Tensor idx: rows of ``x`` in the training set, for per-example guides (N,).
    :param progress: a tqdm bar; None shows it only on a terminal.
    :returns: an :class:`AISResult`; nats, float64.
    :raises ConfigError: for a discrete or constrained latent, or a bad option.
    """
    return _run(model, guide, x, None, options, batch_size, idx, progress, "AIS")


def reverse_ais(model, guide, x, z_exact, options=None, batch_size=100, progress=False):
    """Reverse AIS from exact posterior samples: a stochastic upper bound of log p(x) per row of ``x``.

    :param dict z_exact: site -> (N, D), one exact draw z ~ p(z | x_n) per row (the z that
        generated x_n when x was simulated from the model); every chain starts there.

    The step sizes come from a forward first pass, as in :func:`ais`; other parameters as there.
    :returns: an :class:`AISResult` whose ``log_likelihood`` is the upper bound and whose
        ``log_weights`` are -log w^rev per chain.
    """
    return _run(model, guide, x, z_exact, options, batch_size, None, progress, "reverse AIS")
