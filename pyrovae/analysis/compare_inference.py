r"""``pyrovae compare-inference``: amortized against per-example inference on the same model.

The decomposition of Cremer, Li & Duvenaud (2018, "Inference Suboptimality in Variational
Autoencoders", arXiv:1801.03558, section 3), per test example, in nats:

* log p-hat(x): the IWAE estimate with K samples (Burda et al. 2016, eq. 8), proposal q*;
* L[q*]: the ELBO of a per-example diagonal Gaussian optimized to convergence (started at
  the encoder's output, ``fit_steps`` Adam steps with 10 particles and a cosine-annealed step
  size, model frozen), K-sample Monte Carlo;
* L[q]: the amortized ELBO of the encoder's q(z|x), K-sample Monte Carlo;
* approximation gap = log p-hat(x) - L[q*] (the family's limit);
* amortization gap = L[q*] - L[q] (the encoder's shortfall).

``log_likelihood_iwae_q`` is the IWAE estimate with the encoder's q as the proposal. With
``method="ais"`` (``--method ais``), log p(x) is also estimated by annealed importance
sampling from the encoder's q (:mod:`pyrovae.inference.ais`), as Cremer et al. do:
``log_likelihood_ais`` and ``approximation_gap_ais`` = log p-hat_AIS(x) - L[q*] sit beside the
IWAE-based ones (the amortization gap does not involve log p(x)).

Each is averaged over the examples, with its standard error (the standard deviation of the
per-example values over sqrt(N)). Also: the refinement curve (ELBO against Adam steps, from
the encoder's output and from the prior N(0, I)), and the cost of each mode: seconds, number
of variational parameters, and peak resident memory (Linux; None elsewhere).
"""

import dataclasses
import math
import os
import time
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from pyrovae.analysis.ais_options import AISOptions
from pyrovae.analysis.memory import peak_memory
from pyrovae.analysis.summary import mean_stderr
from pyrovae.errors import ConfigError
from pyrovae.figure import subplots
from pyrovae.inference.ais import ais, check_continuous
from pyrovae.inference.guides import gaussian_params
from pyrovae.inference.local_fit import fit_local
from pyrovae.inference.marginal import iwae
from pyrovae.jsonio import write_json
from pyrovae.runs.load import load_run

__all__ = ["compare_inference", "Comparison"]

CURVE_STEPS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


class Comparison(NamedTuple):
    report: dict
    path: str
    figure: str


def _one_batch(model, guide, x, fit_steps, lr, record, num_particles, num_samples, seconds, peaks, options=None):
    """q (the encoder), q* refined from it and per-example q fitted from the prior on one batch;
    their refinement curves and IWAE estimates. Adds the batch's seconds and peak memory to
    ``seconds`` and ``peaks``."""
    with peak_memory() as mem:
        t0 = time.perf_counter()
        with torch.no_grad():
            loc, scale = gaussian_params(guide, x)
        seconds["amortized"] += time.perf_counter() - t0
    peaks["amortized"] = max(peaks.get("amortized") or 0, mem.peak or 0) or None
    t0 = time.perf_counter()
    if fit_steps >= 100:  # the cost of the 100-step refinement, timed on its own
        fit_local(model, x, loc, scale, steps=100, lr=lr, num_particles=num_particles)
        seconds["refined_100"] += time.perf_counter() - t0
    with peak_memory() as mem:
        qstar, from_encoder = fit_local(model, x, loc, scale, steps=fit_steps, lr=lr, record_at=record,
                                        num_particles=num_particles)
    peaks["refined"] = max(peaks.get("refined") or 0, mem.peak or 0) or None
    t0 = time.perf_counter()
    with peak_memory() as mem:
        _, from_scratch = fit_local(model, x, torch.zeros_like(loc), torch.ones_like(scale), steps=fit_steps, lr=lr,
                                    record_at=record, num_particles=num_particles)
    seconds["per_example"] += time.perf_counter() - t0
    peaks["per_example"] = max(peaks.get("per_example") or 0, mem.peak or 0) or None
    t0 = time.perf_counter()
    amortized = iwae(model, guide, x, num_samples, psis=True)
    refined = iwae(model, qstar, x, num_samples, psis=True)
    seconds["iwae"] += time.perf_counter() - t0
    out = {"from_encoder": [e for _, e in from_encoder], "from_scratch": [e for _, e in from_scratch],
           "elbo_q": amortized.elbo, "elbo_qstar": refined.elbo, "log_px": refined.log_likelihood,
           "log_px_q": amortized.log_likelihood, "khat_q": amortized.khat, "khat_qstar": refined.khat}
    if options is not None:
        t0 = time.perf_counter()
        annealed = ais(model, guide, x, options, batch_size=len(x))
        seconds["ais"] += time.perf_counter() - t0
        out.update(log_px_ais=annealed.log_likelihood, ais_acceptance=annealed.acceptance,
                   ais_mc_stderr=annealed.mc_stderr)
    return out


def compare_inference(run_dir, num_examples=1000, num_samples=5000, fit_steps=1000, lr=3e-2, split="test", seed=0,
                      batch_size=100, checkpoint="best", progress=None, num_particles=10, method="iwae",
                      ais_options=None):
    """Compute the decomposition described in the module doc for ``num_examples`` random
    examples of ``split`` (``Split.random_rows`` with ``seed``); returns a :class:`Comparison`
    (also ``compare_inference_{split}_{checkpoint}.json`` and ``.png`` in the run directory, with
    ``_ais_T{T}_C{C}`` before the suffix for ``method="ais"``).

    :param str method: ``iwae``, or ``ais`` to add the AIS estimate of log p(x) and its gaps.
    :param ais_options: an :class:`~pyrovae.analysis.ais_options.AISOptions` (default settings if None);
        AIS starts from the encoder's q(z|x) unless ``start="prior"``.
    :raises ConfigError: for a run without an encoder, non-positive counts, or a bad AIS option.
    """
    if num_examples < 2 or num_samples < 1 or fit_steps < 1:
        raise ConfigError("need --num-examples >= 2, --num-samples >= 1 and --fit-steps >= 1")
    if method not in ("iwae", "ais"):
        raise ConfigError(f"unknown --method {method!r}; valid: iwae, ais")
    options = (ais_options or AISOptions()).check() if method == "ais" else None
    config, model, guide, state, data = load_run(run_dir, checkpoint)
    if getattr(guide, "local_tables", ()):
        raise ConfigError("compare-inference compares an encoder with per-example inference; this run has no encoder")
    if options is not None:
        check_continuous(model)
    part = data.split(split)
    x_all = part.x[part.random_rows(num_examples, seed)]
    record = [s for s in CURVE_STEPS if s <= fit_steps]
    per = {k: [] for k in ("log_px", "log_px_q", "elbo_qstar", "elbo_q", "khat_q", "khat_qstar")}
    if options is not None:
        per.update(log_px_ais=[], ais_acceptance=[], ais_mc_stderr=[])
    curves = {"from_encoder": [], "from_scratch": []}
    seconds = {"amortized": 0.0, "refined_100": 0.0, "per_example": 0.0, "iwae": 0.0, "ais": 0.0}
    peaks = {}
    torch.manual_seed(seed)
    bar = tqdm(total=len(x_all), desc="compare-inference", unit="example",
               disable=None if progress is None else not progress)
    for start in range(0, len(x_all), batch_size):
        x = x_all[start : start + batch_size]
        for key, value in _one_batch(model, guide, x, fit_steps, lr, record, num_particles, num_samples, seconds,
                                     peaks, options).items():
            (curves if key in curves else per)[key].append(value)
        bar.update(len(x))
    bar.close()

    report = _report(per, curves, record, seconds, peaks, guide, config.latent_dim, len(x_all),
                     dict(split=split, num_examples=len(x_all), num_samples=num_samples, fit_steps=fit_steps, lr=lr,
                          seed=seed, method=method))
    if options is not None:
        report.update(_ais_report(per, seconds, options))
    stem = os.path.join(run_dir, f"compare_inference_{split}_{checkpoint}"
                        + ("" if options is None else "_" + options.tag()))
    path = stem + ".json"
    write_json(path, report)
    figure = stem + ".png"
    _figure(figure, report)
    return Comparison(report, path, figure)


def _ais_report(per, seconds, options):
    """The AIS fields of the report (see the module doc)."""
    mc = torch.cat(per["ais_mc_stderr"]).double()
    return {
        "log_likelihood_ais": mean_stderr(per["log_px_ais"]),
        "log_likelihood_ais_mc_stderr": float(mc.pow(2).sum().sqrt() / len(mc)),
        "approximation_gap_ais": mean_stderr([a - b for a, b in zip(per["log_px_ais"], per["elbo_qstar"])]),
        "ais_minus_iwae": mean_stderr([a - b for a, b in zip(per["log_px_ais"], per["log_px"])]),
        "ais": {**dataclasses.asdict(options), "acceptance_mean": float(torch.cat(per["ais_acceptance"]).mean()),
                "seconds": seconds["ais"]},
    }


def _report(per, curves, record, seconds, peaks, guide, D, N, header):
    """The decomposition's numbers from the per-batch results (see the module doc)."""
    fit_steps = header["fit_steps"]
    weights = np.array([len(c) for c in per["elbo_q"]], dtype=float)
    weights /= weights.sum()
    curve_mean = {k: (np.array(v) * weights[:, None]).sum(0).tolist() for k, v in curves.items()}
    log_px, elbo_qstar, elbo_q = per["log_px"], per["elbo_qstar"], per["elbo_q"]
    approx = [a - b for a, b in zip(log_px, elbo_qstar)]
    amort = [a - b for a, b in zip(elbo_qstar, elbo_q)]
    encoder_params = sum(p.numel() for p in guide.parameters())
    # share of the amortization gap closed by 100 refinement steps, on the curve's own estimates
    gap = mean_stderr(amort)[0]
    at_100 = curve_mean["from_encoder"][record.index(100)] if 100 in record else None
    closed = None if at_100 is None or gap <= 0 else (at_100 - curve_mean["from_encoder"][0]) / gap
    return {
        **header,
        "log_likelihood": mean_stderr(log_px), "log_likelihood_iwae_q": mean_stderr(per["log_px_q"]),
        "elbo_qstar": mean_stderr(elbo_qstar), "elbo_q": mean_stderr(elbo_q),
        "approximation_gap": mean_stderr(approx), "amortization_gap": mean_stderr(amort),
        "khat_share_above_0.7": {"q": float((torch.cat(per["khat_q"]) > 0.7).double().mean()),
                                 "qstar": float((torch.cat(per["khat_qstar"]) > 0.7).double().mean())},
        "refinement_curve": {"steps": record, **curve_mean},
        "amortization_gap_closed_at_100_steps": closed,
        "cost": {
            "amortized": {"seconds": seconds["amortized"], "parameters": encoder_params,
                          "peak_memory_bytes": peaks.get("amortized")},
            "refined_100_steps": {"seconds": seconds["refined_100"] or None,
                                  "parameters": encoder_params + 2 * N * D, "peak_memory_bytes": peaks.get("refined")},
            f"per_example_{fit_steps}_steps": {"seconds": seconds["per_example"], "parameters": 2 * N * D,
                                               "peak_memory_bytes": peaks.get("per_example")},
        },
        "iwae_seconds": seconds["iwae"],
        "units": "nats per datapoint; each pair is (mean, standard error)",
    }


def _figure(path, r):
    fig, (left, right) = subplots(1, 2, figsize=(10, 3.8))
    names = ["approximation gap\nlog p(x) - L[q*]", "amortization gap\nL[q*] - L[q]"]
    values = [r["approximation_gap"], r["amortization_gap"]]
    colours = ["tab:blue", "tab:orange"]
    if "approximation_gap_ais" in r:  # beside the IWAE-based one
        names[0] = "approximation gap\nIWAE log p(x) - L[q*]"
        names.insert(1, "approximation gap\nAIS log p(x) - L[q*]")
        values.insert(1, r["approximation_gap_ais"])
        colours.insert(1, "tab:cyan")
    left.bar(names, [v[0] for v in values], yerr=[2 * v[1] for v in values], color=colours, capsize=6)
    left.tick_params(axis="x", labelsize=9 if len(names) < 3 else 7)
    left.set_ylabel("nats per datapoint (± 2 s.e.)")
    left.set_title(f"{r['num_examples']} {r['split']} examples, K = {r['num_samples']}", fontsize=9)
    steps = np.array(r["refinement_curve"]["steps"]) + 1
    right.plot(steps, r["refinement_curve"]["from_encoder"], marker="o", label="refined from the encoder")
    right.plot(steps, r["refinement_curve"]["from_scratch"], marker="o", label="per-example from N(0, I)")
    lines = [("log_likelihood", "log p(x) (IWAE)", ":"), ("elbo_qstar", "L[q*]", "--"),
             ("elbo_q", "L[q] (amortized)", "-.")]
    if "log_likelihood_ais" in r:
        lines.append(("log_likelihood_ais", "log p(x) (AIS)", (0, (1, 4))))
    for key, name, style in lines:
        right.axhline(r[key][0], color="0.3", linestyle=style, linewidth=1, label=name)
    right.set_xscale("log")
    right.set_xlabel("Adam steps + 1")
    right.set_ylabel("ELBO (nats per datapoint)")
    lo = min(r["elbo_q"][0], r["refinement_curve"]["from_encoder"][0]) - 5
    right.set_ylim(lo, max(r["log_likelihood"][0], r.get("log_likelihood_ais", (-math.inf,))[0]) + 2)
    right.legend(fontsize=7)
    fig.savefig(path, dpi=100, bbox_inches="tight")
