"""``pyrovae posterior-check``: compare guides with a NUTS reference posterior.

For a few random test examples, NUTS draws p(z | x) with the decoder fixed
(:mod:`pyrovae.inference.mcmc`; R-hat and ESS from ArviZ). Three guides are compared with it:

* ``amortized``: the run's encoder q(z | x);
* ``per-example``: a diagonal Gaussian per example, fitted from scratch on the ELBO;
* ``flow``: a spline-flow q per example (:class:`~pyrovae.inference.guides.flow.FlowGuide`),
  fitted on the ELBO.

Per example and guide: ``mean_error`` = ||E_q[z] - E_nuts[z]||, ``cov_error`` = Frobenius
norm of Cov_q - Cov_nuts, ``energy_distance`` between q's and the NUTS draws (Szekely &
Rizzo 2013, computed by ``dcor.energy_distance``), and PSIS ``khat`` of q's importance
weights. Output: a table on stdout, ``posterior_check_{split}_{checkpoint}.json`` and, for a 2-D
latent, ``posterior_check_{split}_{checkpoint}.png`` (guide density contours over the NUTS draws).
"""

import os
from typing import NamedTuple

import dcor
import numpy as np
import torch

from pyrovae.errors import ConfigError
from pyrovae.figure import subplots
from pyrovae.inference.guides import gaussian_params
from pyrovae.inference.guides.flow import FlowGuide
from pyrovae.inference.local_fit import LocalGaussian, fit_guide, fit_local
from pyrovae.inference.marginal import iwae
from pyrovae.inference.mcmc import nuts_posterior
from pyrovae.jsonio import write_json
from pyrovae.runs.load import load_run

__all__ = ["posterior_check", "PosteriorCheck", "GUIDE_NAMES", "draw_distances"]

GUIDE_NAMES = ("amortized", "per-example", "flow")


class PosteriorCheck(NamedTuple):
    report: dict  #: see the module doc; also in ``path``
    path: str
    figure: str | None


@torch.no_grad()
def _draw(guide, x_i, n):
    """n draws of q for one example (x_i of shape (1, P)), shape (n, D)."""
    import pyro
    import pyro.poutine as poutine

    with pyro.plate("draws", n, dim=-2):
        trace = poutine.trace(guide).get_trace(x_i)
    site = next(s for s in trace.nodes.values() if s["type"] == "sample" and s["name"] not in ("data", "draws"))
    return site["value"].reshape(n, -1)


def draw_distances(samples, ref, max_energy_draws=2000):
    """How far the draws ``samples`` (n, D) lie from the reference draws ``ref`` (m, D).

    :returns: a dict: ``mean_error`` = ||mean(samples) - mean(ref)||, ``cov_error`` = the
        Frobenius norm of the difference of their sample covariances (for D = 1, of their
        variances), and ``energy_distance``, the V-statistic 2 E|X - Y| - E|X - X'| - E|Y - Y'|
        of Szekely & Rizzo (2013) on the first ``max_energy_draws`` of each (``dcor``).
    """
    if samples.shape[-1] > 1:
        cov_error = float((torch.cov(samples.T) - torch.cov(ref.T)).norm())
    else:
        cov_error = float(abs(samples.var() - ref.var()))
    return {"mean_error": float((samples.mean(0) - ref.mean(0)).norm()),
            "cov_error": cov_error,
            "energy_distance": float(dcor.energy_distance(samples.double().numpy()[:max_energy_draws],
                                                          ref.double().numpy()[:max_energy_draws]))}


def posterior_check(run_dir, num_examples=4, num_chains=4, num_samples=1000, warmup_steps=500, fit_steps=1000,
                    seed=0, split="test", checkpoint="best", progress=None):
    """Run the comparison described in the module doc; returns a :class:`PosteriorCheck`."""
    if num_examples < 1 or num_chains < 2 or num_samples < 10:
        raise ConfigError("need --num-examples >= 1, --num-chains >= 2 (for R-hat) and --num-samples >= 10")
    config, model, guide, state, data = load_run(run_dir, checkpoint)
    part = data.split(split)
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(part), generator=gen)[:num_examples]
    x = part.x[pick]
    D = config.latent_dim
    reference = nuts_posterior(model, x, num_chains, num_samples, warmup_steps, seed, progress=bool(progress))
    summary = reference.summary
    draws = reference.samples.reshape(-1, len(x), D)  # (C*S, B, D)

    torch.manual_seed(seed)
    loc, scale = gaussian_params(guide, x)
    per_example, _ = fit_local(model, x, torch.zeros(len(x), D), torch.ones(len(x), D), steps=fit_steps, lr=0.02,
                               num_particles=16)  # from the prior
    guides = {"amortized": lambda i: _Row(guide, x[i : i + 1]),
              "per-example": lambda i: _Row(_slice(per_example, i), x[i : i + 1])}
    flows = []
    for i in range(len(x)):
        flow, _ = fit_guide(model, FlowGuide(loc[i : i + 1], scale[i : i + 1], site=model.latent_sites[0]),
                            x[i : i + 1], steps=fit_steps, lr=5e-3, num_particles=16)
        flows.append(flow)
    guides["flow"] = lambda i: _Row(flows[i], x[i : i + 1])

    rows, guide_draws = [], {}
    for i in range(len(x)):
        ref = draws[:, i]  # (C*S, D)
        names = [f"z[{i}, {d}]" for d in range(D)]
        row = {"example": int(pick[i]), "r_hat_max": float(summary.loc[names, "r_hat"].max()),
               "ess_bulk_min": float(summary.loc[names, "ess_bulk"].min())}
        for name in GUIDE_NAMES:
            q = guides[name](i)
            samples = _draw(q.guide, q.x, len(ref))
            guide_draws[i, name] = samples
            torch.manual_seed(seed + i)
            khat = iwae(model, q.guide, q.x, num_samples=5000, psis=True).khat
            row[name] = {**draw_distances(samples, ref), "khat": float(khat[0])}
        rows.append(row)

    report = {"split": split, "num_chains": num_chains, "num_samples": num_samples, "warmup_steps": warmup_steps,
              "fit_steps": fit_steps, "seed": seed, "r_hat_max": max(r["r_hat_max"] for r in rows),
              "ess_bulk_min": min(r["ess_bulk_min"] for r in rows), "examples": rows}
    report["checkpoint"] = checkpoint
    stem = os.path.join(run_dir, f"posterior_check_{split}_{checkpoint}")
    path = stem + ".json"
    write_json(path, report)
    figure = None
    if D == 2:
        figure = stem + ".png"
        _figure(figure, draws, guide_draws, guides, rows)
    return PosteriorCheck(report, path, figure)


class _Row(NamedTuple):
    guide: object
    x: torch.Tensor


def _slice(local, i):
    """The one-example LocalGaussian of row i."""
    return LocalGaussian(local.loc[i : i + 1], local.scale[i : i + 1], site=local.site)


@torch.no_grad()
def _log_density(q, grid):
    """log q(z) on grid points (G, 2) for a one-example guide."""
    import pyro.poutine as poutine

    trace = poutine.trace(q.guide).get_trace(q.x)
    site = next(s for s in trace.nodes.values() if s["type"] == "sample" and s["name"] != "data")
    return site["fn"].log_prob(grid[:, None, :]).reshape(-1)


def _figure(path, draws, guide_draws, guides, rows):
    n = draws.shape[1]
    fig, axes = subplots(1, n, figsize=(3.4 * n, 3.4), squeeze=False)
    colors = {"amortized": "tab:red", "per-example": "tab:blue", "flow": "tab:green"}
    for i in range(n):
        ax = axes[0][i]
        ref = draws[:, i].numpy()
        ax.scatter(ref[:, 0], ref[:, 1], s=2, color="0.6", alpha=0.3, label="NUTS")
        shown = np.concatenate([ref] + [guide_draws[i, name].numpy() for name in guides])  # NUTS and guides
        lo, hi = np.percentile(shown, 0.5, axis=0), np.percentile(shown, 99.5, axis=0)
        pad = 0.3 * (hi - lo)
        g0, g1 = np.meshgrid(np.linspace(lo[0] - pad[0], hi[0] + pad[0], 80), np.linspace(lo[1] - pad[1], hi[1] + pad[1], 80))
        grid = torch.tensor(np.stack([g0.ravel(), g1.ravel()], 1), dtype=torch.float32)
        for name, make in guides.items():
            density = _log_density(make(i), grid).exp().reshape(g0.shape).numpy()
            ax.contour(g0, g1, density, levels=3, colors=colors[name], linewidths=1)
            ax.plot([], [], color=colors[name], label=f"{name} (k-hat {rows[i][name]['khat']:.2f})")
        ax.set_title(f"test example {rows[i]['example']}, max R-hat {rows[i]['r_hat_max']:.4f}", fontsize=8)
        ax.legend(fontsize=6, loc="upper right")
    fig.savefig(path, dpi=100, bbox_inches="tight")
