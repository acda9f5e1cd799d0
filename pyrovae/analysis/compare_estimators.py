r"""``pyrovae compare-estimators``: the evidence for choosing a gradient estimator, on your model.

For a model and guide (a trained run, or a fresh model at initialization) and one fixed
minibatch of B examples, parameters frozen, each estimator of :mod:`pyrovae.inference.estimators`
draws R independent gradients of the minibatch's mean negative objective (per datapoint). Per
parameter group (encoder, decoder, prior) the report gives the mean gradient's norm, the
variance (trace of the covariance) and its ratio to the first estimator's (``trace`` or
``enum``), the signal-to-noise ratio, the median seconds per gradient and the peak memory (see
:mod:`pyrovae.inference.gradients`).

Bias check: estimators of the same objective (``trace``, ``meanfield``, ``score``,
``score+baseline``; ``enum``, ``tracegraph``, ``tracegraph+baseline``) are compared with the
first of them, the reference, by two-sample z-tests of their mean gradients projected onto two
directions fixed beforehand: the reference's mean gradient from a pilot run of
``max(20, R // 4)`` draws, and a random direction. They agree when |z| < 3.29 (two-sided
p = 0.001) for every group and direction. ``relaxed-T`` is compared with the ELBO's reference the
same way, and its bias is reported as :func:`~pyrovae.inference.gradients.bias_norm` relative
to the reference mean's norm.

Equal-time training (``train_seconds > 0``): each estimator trains the same initial model for
the same step time (see :mod:`pyrovae.analysis.equal_time`).

Writes ``compare_estimators.json``, ``estimator_variance.png`` (variance and SNR bars, log
scale) and, with training, ``estimator_training.png`` (validation ELBO against seconds).
"""

import os
import statistics
import warnings
from typing import NamedTuple

import pyro
import torch
from tqdm.auto import tqdm

from pyrovae.analysis.equal_time import train_for
from pyrovae.analysis.estimator_figures import training_figure, variance_figure
from pyrovae.analysis.memory import peak_memory
from pyrovae.build import build_elbo, build_model_and_guide
from pyrovae.data import load_dataset
from pyrovae.errors import CheckpointError, ConfigError
from pyrovae.inference.elbos import loss_and_grads
from pyrovae.inference.estimators import DEFAULT_TEMPERATURES, estimator, lineup
from pyrovae.inference.gradients import (
    bias_norm,
    draw_gradients,
    parameter_groups,
    z_score,
)
from pyrovae.jsonio import write_json
from pyrovae.local import private_param_store
from pyrovae.models import LIKELIHOODS
from pyrovae.registry import lookup
from pyrovae.runs.load import load_run

__all__ = ["compare_estimators", "EstimatorComparison", "Z_CRITICAL"]

Z_CRITICAL = 3.29  # two-sided p = 0.001 per test
REPORT = "compare_estimators.json"
PILOT_SEED = 10**6  # offset of the pilot run's seed


class EstimatorComparison(NamedTuple):
    report: dict
    path: str
    figures: list


def _setup(run_dir, config, checkpoint, device):
    """(config, model, guide, data): a saved run, or ``config``'s model at initialization."""
    if run_dir is not None:
        config, model, guide, _, data = load_run(run_dir, checkpoint, device)
        return config, model, guide, data
    config.validate()
    binary = lookup(LIKELIHOODS, config.likelihood, "likelihood").binary
    data = load_dataset(config.data, config.data_dir, binary=binary,
                        split_seed=config.split_seed)
    torch.manual_seed(config.seed)
    model, guide = build_model_and_guide(config, data.num_pixels, len(data.train), data.image_shape)
    model.initialize_from_data(data.train.x)
    return config, model.to(device), guide.to(device), data


def _minibatch(data, split, batch_size, seed, device):
    """B random examples of ``split`` (binarized once, with ``seed``, if the data are dynamic)."""
    part = data.split(split)
    if not 1 <= batch_size <= len(part):
        raise ConfigError(f"--batch-size must be between 1 and the {len(part)} examples of the {split} split, "
                          f"got {batch_size}")
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(part), generator=gen)[:batch_size]
    x = part.x[idx]
    if data.binarization == "dynamic" and split == "train":
        x = torch.bernoulli(x, generator=gen)
    return x.to(device), idx.to(device)


def _out_dir(run_dir, out, overwrite):
    if out is None:
        if run_dir is None:
            raise ConfigError("a fresh model needs --out, the folder for the report and figures")
        return run_dir
    if os.path.isdir(out) and os.path.exists(os.path.join(out, REPORT)) and not overwrite:
        raise CheckpointError(f"{out} already holds {REPORT}; pass --overwrite to replace it, or choose another --out")
    os.makedirs(out, exist_ok=True)
    return out


def _directions(estimate, groups, num_draws, seed):
    """Per group: the unit mean of a pilot run of ``estimate`` ("signal") and a random unit vector."""
    moments, _ = draw_gradients(estimate, groups, num_draws)
    gen = torch.Generator().manual_seed(seed)
    directions = {}
    for name, m in moments.items():
        random = torch.randn(m.mean.shape, generator=gen, dtype=torch.float64)
        norm = float(m.mean.norm())
        signal = m.mean / norm if norm > 0 else random / random.norm()
        directions[name] = {"signal": signal.cpu(), "random": random / random.norm()}
    return directions


def _references(specs, names):
    """objective -> the first applicable estimator of it."""
    refs = {}
    for name in names:
        refs.setdefault(specs[name].objective, name)
    return refs


def _bias_checks(specs, moments, refs, report):
    checks = []
    for name, spec in specs.items():
        if name not in moments:
            continue
        relaxed = spec.elbo == "relaxed"
        ref = refs.get("elbo") if relaxed else refs[spec.objective]
        if ref is None or ref == name:
            continue
        for group, m in moments[name].items():
            r = moments[ref][group]
            z = {d: z_score(m, r, d) for d in ("signal", "random")}
            entry = {"estimator": name, "reference": ref, "group": group, "z_signal": z["signal"],
                     "z_random": z["random"], "agrees": all(abs(v) < Z_CRITICAL for v in z.values())}
            if relaxed:
                ref_norm = report[ref]["groups"][group]["mean_norm"]
                entry.update(temperature=spec.temperature, bias_norm=bias_norm(m, r),
                             relative_bias=bias_norm(m, r) / ref_norm if ref_norm > 0 else None)
            checks.append(entry)
    return checks


@private_param_store
def compare_estimators(run_dir=None, config=None, out=None, estimators=None, temperatures=DEFAULT_TEMPERATURES,
                       num_draws=200, warmup=20, batch_size=100, split="train", seed=0, checkpoint="best",
                       train_seconds=0.0, device="cpu", overwrite=False, progress=None):
    """Compare gradient estimators on one model; see the module doc.

    :param str run_dir: a saved run, or None for ``config``'s model at initialization.
    :param config: a :class:`~pyrovae.config.TrainConfig` (fresh model only).
    :param str out: the folder for the outputs (default: ``run_dir``).
    :param estimators: estimator names (default: :func:`~pyrovae.inference.estimators.lineup`).
    :param temperatures: the relaxed estimator's temperatures in the default lineup.
    :param int num_draws: R gradient draws per estimator.
    :param int warmup: draws discarded first (decaying-average baselines settle).
    :param int batch_size: B, the fixed minibatch's size, drawn from ``split`` with ``seed``.
    :param float train_seconds: the budget of equal-time training per estimator; 0 skips it.
    :returns: an :class:`EstimatorComparison` (report dict, JSON path, figure paths).
    :raises ConfigError: for R < 2, a bad batch size, unknown estimator names, no applicable
        estimator, a per-example guide with a split other than ``train``.
    :raises CheckpointError: for an unreadable run, or an ``out`` that holds a report without
        ``overwrite``.
    """
    if num_draws < 2 or warmup < 0 or train_seconds < 0:
        raise ConfigError("need --num-draws >= 2, --warmup >= 0 and --train-seconds >= 0")
    if (run_dir is None) == (config is None):
        raise ConfigError("give a run directory or a fresh model's configuration, not both")
    config, model, guide, data = _setup(run_dir, config, checkpoint, device)
    if getattr(guide, "local_tables", ()) and split != "train":
        raise ConfigError("a per-example guide has parameters for training examples only; use --split train")
    names = list(estimators or lineup(model, temperatures))
    specs = {name: estimator(name) for name in names}
    out = _out_dir(run_dir, out, overwrite)
    x, idx = _minibatch(data, split, batch_size, seed, device)
    groups = parameter_groups(model, guide)

    elbos, skipped = _build_elbos(specs, config, model)

    def estimate_fn(name):
        guide_fn = specs[name].wrap_guide(guide)
        return lambda: loss_and_grads(elbos[name], model, guide_fn, x, idx, batch_size)

    refs = _references(specs, list(elbos))
    first = refs.get("elbo", next(iter(elbos)))
    pyro.clear_param_store()
    torch.manual_seed(seed + PILOT_SEED)  # the pilot's draws are not reused by the reference
    directions = _directions(estimate_fn(first), groups, max(20, num_draws // 4), seed)
    moments, report = _draw_all(elbos, specs, estimate_fn, groups, directions, first, num_draws, warmup,
                                batch_size, seed, device, progress)

    result = {
        "model": config.model, "guide": config.guide, "data": config.data, "run_dir": run_dir,
        "checkpoint": checkpoint if run_dir else "initialization", "split": split, "batch_size": batch_size,
        "num_draws": num_draws, "warmup": warmup, "seed": seed, "device": str(device),
        "threads": torch.get_num_threads(), "z_critical": Z_CRITICAL,
        "parameters": {g: sum(p.numel() for p in ps) for g, ps in groups.items()},
        "estimators": report, "skipped": skipped, "references": refs,
        "bias_checks": _bias_checks(specs, moments, refs, report),
    }
    if train_seconds > 0:
        result["training"] = _equal_time(elbos, specs, model, guide, data, config, device, seed, train_seconds,
                                         progress)
    path = os.path.join(out, REPORT)
    write_json(path, result)
    figures = [variance_figure(os.path.join(out, "estimator_variance.png"), result)]
    if "training" in result:
        figures.append(training_figure(os.path.join(out, "estimator_training.png"), result))
    return EstimatorComparison(result, path, figures)


def _build_elbos(specs, config, model):
    """``({name: ELBO}, {name: why it does not apply})``.

    :raises ConfigError: if no estimator applies."""
    elbos, skipped = {}, {}
    for name, spec in specs.items():
        try:
            elbos[name] = build_elbo(spec.configure(config), model)
        except ConfigError as err:
            skipped[name] = str(err)
    if not elbos:
        raise ConfigError(f"no estimator applies to model {config.model!r}: "
                          + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    return elbos, skipped


def _draw_all(elbos, specs, estimate_fn, groups, directions, first, num_draws, warmup, batch_size, seed, device,
              progress):
    """R gradient draws of each estimator; ``(moments, report)`` with the variance of each
    parameter group against ``first``'s."""
    scale = 1.0 / batch_size  # gradients of the mean over the minibatch: per datapoint
    moments, report = {}, {}
    bar = tqdm(total=len(elbos) * num_draws, desc="compare-estimators", unit="gradient",
               disable=None if progress is None else not progress)
    for i, (name, elbo) in enumerate(elbos.items()):
        bar.set_postfix(estimator=name)
        pyro.clear_param_store()  # decaying-average baselines start afresh
        torch.manual_seed(seed + 1 + i)  # independent draws across estimators, as the z-tests assume
        with peak_memory(device) as mem:
            moments[name], seconds = draw_gradients(estimate_fn(name), groups, num_draws, warmup, directions,
                                                    progress=bar.update, scale=scale)
        spec = specs[name]
        report[name] = {"objective": spec.objective, "elbo": spec.elbo, "num_particles": spec.num_particles,
                        "seconds_per_gradient": statistics.median(seconds), "peak_memory_bytes": mem.peak,
                        "groups": {g: m.summary() for g, m in moments[name].items()}}
        left_out = max(m.nonfinite for m in moments[name].values())
        if left_out:
            warnings.warn(f"compare-estimators: {left_out} of {num_draws} gradient draws of {name} had NaN or "
                          f"infinite coordinates and were left out of its statistics (nonfinite_draws in the JSON)",
                          RuntimeWarning, stacklevel=2)
    bar.close()
    for name, entry in report.items():  # variance against the first estimator (trace, enum) for all
        ref = first
        for group, stats in entry["groups"].items():
            ref_var = report[ref]["groups"][group]["variance"]
            stats["variance_ratio"] = stats["variance"] / ref_var if ref_var > 0 else None
            stats["variance_reference"] = ref
    return moments, report


def _equal_time(elbos, specs, model, guide, data, config, device, seed, budget, progress):
    """Train from the same initial parameters with each estimator; the parameters are restored after."""
    initial = [{k: v.clone() for k, v in module.state_dict().items()} for module in (model, guide)]
    curves = {}
    try:
        for name, elbo in tqdm(elbos.items(), desc="equal-time training", unit="estimator",
                               disable=None if progress is None else not progress):
            for module, state in zip((model, guide), initial):
                module.load_state_dict(state)
            model.train(), guide.train()
            pyro.clear_param_store()
            torch.manual_seed(seed)
            curves[name] = train_for(budget, model, guide, elbo, specs[name].wrap_guide(guide), data, config,
                                     torch.device(device), seed)
    finally:
        for module, state in zip((model, guide), initial):
            module.load_state_dict(state)
        model.eval(), guide.eval()
    return {"budget_seconds": budget, "curves": curves}
