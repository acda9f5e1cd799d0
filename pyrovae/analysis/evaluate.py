"""Evaluate a saved run: per-datapoint IWAE log p(x), ELBO, its parts, and active units.

``pyrovae evaluate RUN_DIR`` loads ``config.json`` and a checkpoint (``best.pt`` by
default), and reports, in nats per datapoint averaged over the split:

* ``log_likelihood``: the IWAE estimate of log p(x) with K = ``num_samples``
  (Burda et al. 2016, eq. 8), with its standard error over datapoints;
* ``elbo``, ``reconstruction`` (E_q log p(x|z)) and ``kl`` (E_q[log q - log p(z)]);
* ``active_units``: latent dimensions with Cov_x(E_q[z_d|x]) > 0.01 (Burda et al. 2016);
* ``ess_mean``: the mean effective sample size of the importance weights;
* ``khat_share_above_0.7``, ``khat_median``, ``khat_max``, ``psis_ess_mean``: PSIS k-hat of
  each datapoint's K importance weights (Yao et al. 2018); above 0.7 the datapoint's
  estimate is unreliable (null, with ``khat_note``, when K < 21 leaves no tail to fit).
  ``khat_{tag}.png`` shows the histogram and the worst examples;
* ``kl_per_dimension``, ``mutual_information``, ``collapsed``: posterior-collapse
  diagnostics (Hoffman & Johnson 2016) for Gaussian q and prior; ``collapsed`` is true when
  the total KL(q(z|x) || p(z)) is below 0.1 nats. ``collapse_{tag}.png`` plots the KL and
  the activity of each dimension.

With ``method="ais"`` (``--method ais``), ``log_likelihood`` is the annealed importance
sampling estimate instead (Neal 2001; HMC transitions as in Wu et al. 2017, see
:mod:`pyrovae.inference.ais`), with ``log_likelihood_mc_stderr`` (its Monte Carlo error over
the chains), ``log_likelihood_iwae`` (the IWAE estimate on the same examples, which the other
fields still come from) and ``ais`` (its settings, mean acceptance and step size).
``num_examples`` evaluates that many random examples of the split (``Split.random_rows``, the
same ones as ``compare-inference`` with the same seed).

The same seed gives the same numbers; the result is saved as ``eval_{tag}.json`` in the run
directory, where the tag names what was evaluated (see :func:`output_tag`):
``eval_test_best_amortized_K5000.json``. No evaluation replaces another of something else.
"""

import dataclasses
import os
import time
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from pyrovae.analysis.classification import classification_accuracy, clustering_scores
from pyrovae.analysis.plots import plot_collapse, plot_khat
from pyrovae.checks import check_int, check_seed
from pyrovae.errors import ConfigError
from pyrovae.inference.diagnostics import (
    KHAT_THRESHOLD,
    PSIS_MIN_SAMPLES,
    mutual_information,
    per_dimension_kl,
)
from pyrovae.analysis.ais_options import AISOptions
from pyrovae.analysis.summary import mean_stderr
from pyrovae.inference.ais import ais, check_continuous
from pyrovae.inference.guides import gaussian_params
from pyrovae.inference.local_fit import fit_local
from pyrovae.inference.marginal import active_units, concat_results, iwae
from pyrovae.jsonio import write_json
from pyrovae.models import guide_discrete_sites
from pyrovae.runs.load import load_run
from pyrovae.training.distributed import SINGLE

__all__ = ["evaluate", "evaluate_run", "EvaluationResult", "Evaluation", "output_tag"]


class Evaluation(NamedTuple):
    report: dict  #: the numbers, as written to ``path`` (see the module doc)
    path: str  #: the JSON file written in the run directory
    seconds: float  #: wall-clock time of the estimate (not in the report, which is reproducible)
    figures: list = []  #: PNG paths: ``khat_{tag}.png``, ``collapse_{tag}.png``
    timing: dict = {}  #: seconds of each estimate: ``iwae`` and, with AIS, ``ais``

COLLAPSE_KL = 0.1  # nats: below this total KL(q(z|x) || p(z)), q ignores x (posterior collapse)


INFERENCE = ("auto", "amortized", "refined", "per-example")
METHODS = ("iwae", "ais")


class EvaluationResult(NamedTuple):
    """What :func:`evaluate` computed; nothing is written."""

    report: dict  #: the numbers (see the module doc), nats per datapoint
    seconds: float  #: wall-clock time of the estimate
    khat: torch.Tensor  #: PSIS k-hat per datapoint, shape (N,)
    posterior_variance: object  #: Var_x E_q[z_d | x] per latent dimension (D,) of the first site, or None
    timing: dict = {}  #: seconds of each estimate: ``iwae`` and, with AIS, ``ais``


def evaluate(model, guide, x, labels=None, num_samples=5000, seed=0, device="cpu", batch_size=100, max_rows=20000,
             progress=None, inference="auto", refine_steps=100, refine_lr=3e-2, split="test", context=SINGLE,
             method="iwae", ais_options=None, rows=None):
    """The per-datapoint IWAE log-likelihood, ELBO, diagnostics and label metrics of ``model``
    and ``guide`` on ``x`` (N, P); see the module doc for the fields. Writes nothing.

    :param labels: int64 (N,), for the label metrics (M2's accuracy, a mixture's clustering), or None.
    :param int num_samples: K importance samples per datapoint.
    :param int seed: seeds the sampling, so the same seed gives identical numbers.
    :param progress: show a progress bar; None shows it only on a terminal.
    :param str inference: how q(z|x) is obtained, every mode scored by the same IWAE evaluator:
        ``amortized`` (the encoder), ``refined`` (the encoder's output refined for
        ``refine_steps`` Adam steps on each example's ELBO, model frozen: "VAE+SVI" of Kim et al.
        2018), ``per-example`` (per-example Gaussians fitted from the prior for ``refine_steps``
        steps), or ``auto``: the guide itself (a per-example guide uses its table on the
        training ``split`` and is fitted per example elsewhere).
    :param context: a :class:`~pyrovae.training.distributed.Context`; with several processes each scores
        a contiguous block of ``x`` and rank 0 gathers the per-datapoint results.
    :param str method: ``iwae``, or ``ais`` for an AIS ``log_likelihood`` (see the module doc).
    :param ais_options: an :class:`~pyrovae.inference.ais.AISOptions` (default settings if None).
        AIS from the guide needs its q(z|x): an encoder, or a per-example table on the training split.
    :param torch.Tensor rows: the rows of ``x`` in the split (N,), for a per-example guide's table
        (default 0..N-1).
    :returns: an :class:`EvaluationResult` (None on ranks other than 0).
    :raises ConfigError: for a bad option, or a model AIS cannot anneal (discrete guide sites).
    """
    check_int("--num-samples", num_samples, 1)
    check_int("--batch-size", batch_size, 1)
    check_int("--refine-steps", refine_steps, 0)
    check_seed("--seed", seed)
    if inference not in INFERENCE:
        raise ConfigError(f"unknown inference {inference!r}; valid: {', '.join(INFERENCE)}")
    if method not in METHODS:
        raise ConfigError(f"unknown --method {method!r}; valid: {', '.join(METHODS)}")
    options = (ais_options or AISOptions()).check() if method == "ais" else None
    if options is not None:
        check_continuous(model)
        if options.start == "guide" and _mode(inference, guide, split) not in ("amortized", "table"):
            raise ConfigError("--method ais starts from the guide's q(z|x), which needs an encoder "
                              "(--inference amortized) or a per-example table on the training split; "
                              "use --ais-start prior")
    device = torch.device(device)
    start, stop = context.rank * len(x) // context.world_size, (context.rank + 1) * len(x) // context.world_size
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
        torch.manual_seed(seed + context.rank)
        mode = _mode(inference, guide, split)
        xs = x[start:stop].to(device)  # this process's block (all of x in one process)
        idx = None
        if mode in ("amortized", "table"):
            if mode == "table":
                idx = (torch.arange(len(x)) if rows is None else torch.as_tensor(rows))[start:stop].to(device)
            result = iwae(model, guide, xs, num_samples, batch_size, max_rows, progress, psis=True, idx=idx)
            loc, scale = _gaussian_or_none(model, guide, xs, idx)
        else:
            result, loc, scale = _local_iwae(model, guide, xs, mode, refine_steps, refine_lr, num_samples,
                                             batch_size, max_rows, progress)
        timing = {"iwae": time.perf_counter() - t0}
        annealed = None
        if options is not None:
            t1 = time.perf_counter()
            annealed = ais(model, guide, xs, options, batch_size, idx, progress)
            timing["ais"] = time.perf_counter() - t1
        if context.parallel:
            result, loc, scale = _gather(context, result, loc, scale)
            annealed = _gather_ais(context, annealed)
            if not context.is_main:
                return None
        collapse = _collapse(model, loc, scale, x.to(device))
    seconds = time.perf_counter() - t0
    report = {"split": split, **_summary(result, model, num_samples), **collapse, "inference": mode,
              "refine_steps": refine_steps if mode in ("refined", "per-example") else 0, "seed": seed,
              "units": "nats per datapoint"}
    report["method"] = method
    if annealed is not None:
        report.update(_ais_summary(annealed, report, options))
    if labels is not None:
        report.update(_label_metrics(model, guide, x, labels, loc))
    first = next((m for m in result.posterior_mean.values() if m is not None), None)
    variance = first.var(0, unbiased=False) if first is not None and report.get("kl_per_dimension") else None
    return EvaluationResult(report, seconds, result.khat, variance, timing)


def _ais_summary(a, report, options):
    """The AIS fields of a report (see the module doc); the IWAE ones are kept under ``_iwae``."""
    n = len(a.log_likelihood)
    ll, ll_se = mean_stderr(a.log_likelihood)
    return {
        "log_likelihood_iwae": report["log_likelihood"], "log_likelihood_iwae_stderr": report["log_likelihood_stderr"],
        "log_likelihood": ll, "log_likelihood_stderr": ll_se,
        "log_likelihood_mc_stderr": float(a.mc_stderr.pow(2).sum().sqrt() / n),
        "ais": {**dataclasses.asdict(options), "acceptance_mean": float(a.acceptance.mean()),
                "acceptance_min": float(a.acceptance.min()), "step_size_mean": float(a.step_size.mean())},
    }


def _gather_ais(context, annealed):
    """Every process's :class:`AISResult` block joined in rank order, or None without AIS."""
    if annealed is None:
        return None
    fields = [f for f in annealed._fields if isinstance(getattr(annealed, f), torch.Tensor)]  # per datapoint
    parts = context.gather_objects(annealed._replace(**{f: getattr(annealed, f).cpu() for f in fields}))
    return annealed._replace(**{f: torch.cat([getattr(p, f) for p in parts]) for f in fields})


def _summary(result, model, num_samples):
    n = len(result.log_likelihood)
    ll, ll_se = mean_stderr(result.log_likelihood)
    elbo, elbo_se = mean_stderr(result.elbo)
    units = {name: active_units(m) for name, m in result.posterior_mean.items() if m is not None}
    latent_units = sum(m.shape[-1] for m in result.posterior_mean.values() if m is not None)  # all layers
    return {
        "num_examples": n, "num_samples": num_samples,
        "log_likelihood": ll, "log_likelihood_stderr": ll_se, "elbo": elbo, "elbo_stderr": elbo_se,
        "reconstruction": float(result.reconstruction.mean()), "kl": float(result.kl.mean()),
        "active_units": sum(units.values()), "active_units_per_site": units,
        "latent_dim": getattr(model, "latent_dim", latent_units), "latent_units": latent_units,
        "ess_mean": float(result.ess.mean()), **_khat_summary(result.khat, num_samples),
        "psis_ess_mean": float(result.psis_ess.mean()),
    }


def evaluate_run(run_dir, split="test", num_samples=5000, seed=0, checkpoint="best", device="cpu",
                 batch_size=100, max_rows=20000, data=None, progress=None, inference="auto", refine_steps=100,
                 refine_lr=3e-2, context=SINGLE, method="iwae", ais_options=None, num_examples=None):
    """:func:`evaluate` a run directory's checkpoint on ``split`` and write the result:
    ``eval_{tag}.json``, ``khat_{tag}.png`` and ``collapse_{tag}.png`` (see :func:`output_tag`).

    :param data: an already loaded :class:`~pyrovae.data.Dataset` (skips reloading).
    :param int num_examples: evaluate this many random examples of the split (``Split.random_rows``
        with ``seed``); None evaluates all of it, in order.
    :returns: an :class:`Evaluation` (None on ranks other than 0).
    :raises CheckpointError, DataError, ConfigError: for a bad run directory, data or option.
    """
    check_int("--num-samples", num_samples, 1)
    if num_examples is not None:
        check_int("--num-examples", num_examples, 1)
    _, model, guide, state, data = load_run(run_dir, checkpoint, device, data)
    part = data.split(split)
    rows = None if num_examples is None else part.random_rows(num_examples, seed)
    x, y = (part.x, part.y) if rows is None else (part.x[rows], None if part.y is None else part.y[rows])
    result = evaluate(model, guide, x, y, num_samples, seed, device, batch_size, max_rows, progress,
                      inference, refine_steps, refine_lr, split, context, method, ais_options, rows)
    if result is None:
        return None
    report = {**result.report, "checkpoint": checkpoint, "epoch": state["epoch"]}
    tag = output_tag(split, checkpoint, report["inference"], report["refine_steps"], num_samples, seed)
    if rows is not None:
        tag += f"_n{len(rows)}"
    if method == "ais":
        tag += "_" + (ais_options or AISOptions()).tag()
    path = os.path.join(run_dir, f"eval_{tag}.json")
    write_json(path, report)
    figures = []
    if report["khat_median"] is not None:
        figures.append(plot_khat(os.path.join(run_dir, f"khat_{tag}.png"), result.khat, x, data.image_shape))
    if result.posterior_variance is not None:
        figures.append(plot_collapse(os.path.join(run_dir, f"collapse_{tag}.png"), report["kl_per_dimension"],
                                     result.posterior_variance.tolist()))
    return Evaluation(report, path, result.seconds, figures, result.timing)


def output_tag(split, checkpoint, mode, refine_steps, num_samples, seed=0):
    """What an evaluation evaluated, as a file-name part: ``test_best_amortized_K5000``,
    ``test_last_refined100_K5000_seed3`` (the seed only when it is not 0)."""
    return (f"{split}_{checkpoint}_{mode}{refine_steps or ''}_K{num_samples}"
            + (f"_seed{seed}" if seed else ""))


def _khat_summary(khat, num_samples):
    """The share of datapoints with PSIS k-hat above 0.7, its median and maximum; None with the
    reason when K is too small to fit a Pareto tail."""
    if num_samples < PSIS_MIN_SAMPLES:
        return {"khat_share_above_0.7": None, "khat_median": None, "khat_max": None,
                "khat_note": f"PSIS k-hat needs K >= {PSIS_MIN_SAMPLES} importance samples to fit a Pareto tail; "
                             f"K = {num_samples}"}
    return {"khat_share_above_0.7": float((khat > KHAT_THRESHOLD).double().mean()),
            "khat_median": float(khat.median()), "khat_max": float(khat.max())}


def _label_metrics(model, guide, x, labels, loc):
    """Test accuracy of q(y | x) (semi-supervised models), or clustering accuracy of
    argmax_c p(c | E_q[z|x]) (mixture priors)."""
    if hasattr(guide, "classify"):
        return {"accuracy": classification_accuracy(guide.classify, x, labels)}
    if hasattr(model, "assign") and loc is not None:
        return clustering_scores(model.assign(loc), labels)
    return {}


def _mode(inference, guide, split):
    per_example = bool(getattr(guide, "local_tables", ()))
    if inference == "auto":
        return ("table" if split == "train" else "per-example") if per_example else "amortized"
    if inference in ("amortized", "refined") and per_example:
        raise ConfigError(f"--inference {inference} needs an encoder; this run's guide is per-example")
    return inference


def _gaussian_or_none(model, guide, x, idx=None):
    if guide_discrete_sites(model):
        return None, None
    if len(model.latent_sites) > 1:  # per-dimension KL against p(z) needs a single Gaussian layer
        return None, None
    try:
        return gaussian_params(lambda *a: guide(x, idx, getattr(guide, "num_data", None)), x)
    except ValueError:
        return None, None


def _gather(context, result, loc, scale):
    """Every process's ``(IWAEResult, loc, scale)`` for its block, joined in rank order (on the CPU)."""
    def cpu(t):
        return t.cpu() if isinstance(t, torch.Tensor) else t

    mine = result._replace(**{f: cpu(getattr(result, f)) for f in result._fields if f != "posterior_mean"},
                           posterior_mean={k: cpu(v) for k, v in result.posterior_mean.items()})
    parts = context.gather_objects((mine, cpu(loc), cpu(scale)))
    joined = concat_results([p[0] for p in parts])
    if any(p[1] is None for p in parts):
        return joined, None, None
    return joined, torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts])


def _local_iwae(model, guide, x, mode, steps, lr, num_samples, batch_size, max_rows, progress=None):
    """Fit per-example Gaussians batch by batch (from the encoder, or from the prior), then
    score them with the IWAE evaluator; returns ``(IWAEResult, loc, scale)``."""
    results, locs, scales = [], [], []
    for start in tqdm(range(0, len(x), batch_size), desc=f"{mode} ({steps} steps) + IWAE", unit="batch",
                      disable=None if progress is None else not progress):
        xb = x[start : start + batch_size]
        if mode == "refined":
            loc, scale = gaussian_params(guide, xb)
        else:
            loc, scale = torch.zeros(len(xb), model.latent_dim), torch.ones(len(xb), model.latent_dim)
        local, _ = fit_local(model, xb, loc, scale, steps=steps, lr=lr)
        results.append(iwae(model, local, xb, num_samples, batch_size, max_rows, psis=True))
        locs.append(local.loc.detach())
        scales.append(local.scale.detach())
    return concat_results(results), torch.cat(locs), torch.cat(scales)


def _collapse(model, loc, scale, x, max_examples=1000):
    """Per-dimension KL, mutual information and a collapse flag, for Gaussian q and prior
    (see :mod:`pyrovae.inference.diagnostics`); an empty-valued report otherwise."""
    if loc is None:
        return {"kl_per_dimension": None, "mutual_information": None, "collapsed": None}
    prior = model.prior()
    base = getattr(prior, "base_dist", prior)
    if not isinstance(base, torch.distributions.Normal):
        return {"kl_per_dimension": None, "mutual_information": None, "collapsed": None}
    kl = per_dimension_kl(loc, scale, base.loc, base.scale)
    gen = torch.Generator().manual_seed(0)
    pick = torch.randperm(x.shape[0], generator=gen)[:max_examples]
    mi = mutual_information(loc[pick], scale[pick], prior, generator=gen)
    return {
        "kl_per_dimension": [float(v) for v in kl],
        "mutual_information": mi,
        "mutual_information_examples": len(pick),
        # collapsed: q(z|x) carries (almost) no information about x
        "collapsed": bool(float(kl.sum()) < COLLAPSE_KL),
    }
