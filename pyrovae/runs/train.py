"""``pyrovae train`` as a pipeline: check and load the data, build the model, guide and ELBO
from a :class:`~pyrovae.config.TrainConfig`, prepare the run directory, :func:`~pyrovae.training.fit`
with its callbacks (metrics log, checkpoints and exact resume, early stopping, progress, graceful
stop), then evaluate the best checkpoint on the test split and draw the figures.
"""

import math
import os
import random
import sys
import warnings
from typing import NamedTuple

import numpy as np
import pyro
import torch

from pyrovae.analysis.classification import labelled_only_baseline
from pyrovae.build import build_elbo, build_model_and_guide
from pyrovae.data import load_dataset
from pyrovae.errors import (
    ConfigError,
    Interrupted,
    PyrovaeError,
    StorageError,
    TrainingDiverged,
)
from pyrovae.inference.kl import kl_terms
from pyrovae.config import logger_names
from pyrovae.jsonio import read_jsonl, write_json
from pyrovae.local import private_param_store
from pyrovae.loggers import final_results, hparams
from pyrovae.models import LIKELIHOODS
from pyrovae.registry import lookup
from pyrovae.runs.checkpoint import saved_epoch
from pyrovae.runs.rundir import BASELINE, LAST, METRICS, SUMMARY, prepare_run_dir
from pyrovae.runs.runlock import RunLock
from pyrovae.training import (
    Checkpointer,
    EarlyStopping,
    GracefulStopping,
    MetricsLog,
    ProgressBar,
    fit,
)
from pyrovae.training.distributed import (
    DataParallelObjective,
    check_data_parallel,
    setup,
)
from pyrovae.training.objective import make_objective
from pyrovae.training.optim import make_optimizers
from pyrovae.training.tracking import LogLikelihoodTracker
from pyrovae.training.validation import validation_elbo

__all__ = ["train", "TrainResult", "TrainingDiverged", "resolve_device", "validation_elbo"]


class TrainResult(NamedTuple):
    run_dir: str  #: where the run was saved
    epochs: int  #: epochs completed
    best_epoch: int  #: epoch of the best validation ELBO (the best.pt checkpoint)
    best_valid_elbo: float  #: nats per datapoint
    stopped_early: bool
    evaluation: object  #: test-split :class:`~pyrovae.analysis.evaluate.Evaluation`, or None
    figures: list  #: PNG paths written by :func:`pyrovae.analysis.plots.plot_run`
    baseline: dict = None  #: semi-supervised runs: the labels-only classifier (``baseline_labelled_only.json``)


def resolve_device(name):
    """:raises ConfigError: if CUDA is requested but not available."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return torch.device(name)


def seed_everything(seed):
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _kept(out):
    """What a failed or stopped run left: the epoch ``last.pt`` holds and how to continue, or
    that no checkpoint was written and the same command starts again."""
    last = os.path.join(out, LAST)
    try:
        epoch = saved_epoch(last)
    except PyrovaeError:
        return f"{last} could not be read back"
    if epoch is None:
        return f"no checkpoint was written, so {out} holds nothing trained; the same command starts the run again"
    return f"{last} is intact (epoch {epoch}); continue with: pyrovae train --out {out} --resume"


@private_param_store
def train(config, out, resume=False, overwrite=False, progress=None, log=sys.stderr, callbacks=()):
    """Train ``config``'s model and guide; save the run in ``out``.

    :param TrainConfig config: options (validated here).
    :param str out: run directory; never overwritten unless ``overwrite``.
    :param bool resume: continue the run in ``out`` from ``last.pt``.
    :param progress: show a tqdm bar; None shows it only on a terminal.
    :param callbacks: more :class:`~pyrovae.training.callbacks.Callback` s, run after pyrovae's
        own (metrics log, checkpoints, early stopping, progress, loggers) at each hook.
    :returns: a :class:`TrainResult`.
    :raises ConfigError, DataError, UnknownNameError, CheckpointError: for bad input,
        before anything is written; ``CheckpointError`` too when another process is writing
        ``out`` (:class:`~pyrovae.runs.runlock.RunLock`), or ``overwrite`` finds files there that are
        not a pyrovae run's.
    :raises TrainingDiverged: when the loss is NaN or infinite; ``last.pt`` keeps the
        last completed epoch.
    :raises KeyboardInterrupt: after SIGINT or SIGTERM, once ``last.pt`` holds the state
        after the current step (resuming from it gives the uninterrupted run's results).

    Started by ``torchrun`` with several processes, it trains data-parallel (see
    :mod:`pyrovae.training.distributed`): every process returns, and rank 0 alone writes ``out``.
    """
    lock = RunLock()  # rank 0 takes it in prepare_run_dir; held until training, evaluation and figures end
    try:
        return _train(config, out, resume, overwrite, progress, log, lock, callbacks)
    except OSError as err:  # a full disk, a read-only folder, --out under a file
        raise StorageError(f"could not write the run: {err.strerror or err} ({err.filename or out}); "
                           f"{_kept(out)}") from None
    finally:
        lock.release()


class _Prepared(NamedTuple):
    config: object
    data: object
    model: object
    guide: object
    elbo: object
    objective: object
    resume: bool
    out: str
    loggers: list


def _train(config, out, resume, overwrite, progress, log, lock, extra_callbacks):
    config.validate()
    context = setup(resolve_device(config.device))
    if not context.is_main:
        log = open(os.devnull, "w")
    p = _prepare(config, out, resume, overwrite, log, lock, context)
    config, data, model, guide, out = p.config, p.data, p.model, p.guide, p.out
    num_train = len(data.train)
    tracker = ([LogLikelihoodTracker(data.valid.x, config.track_loglik_every, config.track_num_samples,
                                     config.seed + 2)] if config.track_loglik_every else [])
    callbacks = [*tracker, MetricsLog(os.path.join(out, METRICS)),
                 Checkpointer(out, resume=p.resume, resume_hint=f"pyrovae train --out {out} --resume",
                              rerun_hint="run the same command again, no --overwrite needed",
                              every=config.checkpoint_every),
                 EarlyStopping(config.patience), ProgressBar(config.epochs, progress, log), GracefulStopping(),
                 *p.loggers, *extra_callbacks]
    try:
        # Pyro's validation ran on the check in _prepare; the hot loop skips those checks (a NaN still stops training)
        with pyro.validation_enabled(False), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Encountered NaN")  # Pyro's; a NaN loss stops training in fit
            state = fit(model, guide, p.objective, context.shard(data.train.x), config.epochs, valid=data.valid.x,
                        batch_size=config.batch_size,
                        optimizer=make_optimizers([model, guide], config.lr, config.local_lr),
                        callbacks=callbacks, seed=config.seed, device=context.device, local_steps=config.local_steps,
                        binarize=data.binarization == "dynamic", drop_last=config.elbo == "tracegraph",
                        num_data=num_train, schedule=p.elbo, context=context)
        context.barrier()  # rank 0 has written best.pt
        evaluation, figures = _evaluate_and_plot(config, out, data, progress, context, state.epoch)
        baseline = None
        if context.is_main and evaluation is not None and getattr(model, "semi_supervised", False):
            baseline = labelled_only_baseline(config, data, model.num_classes)
            write_json(os.path.join(out, BASELINE), baseline)
        if context.is_main:
            summary = _summary(out, state, config, model, guide, evaluation)
            for logger in p.loggers:
                logger.log_final(hparams(config), final_results(evaluation and evaluation.report, state,
                                                                summary["training_seconds"]))
            write_json(os.path.join(out, SUMMARY), summary)  # last: its presence says the run finished
    finally:
        for logger in p.loggers:
            logger.close()
    context.barrier()
    return TrainResult(out, state.epoch, state.best_epoch, state.best_valid_elbo, state.since_best >= config.patience,
                       evaluation, figures, baseline)


def _summary(out, state, config, model, guide, evaluation):
    """``summary.json``: what a finished run reached, for ``compare-runs`` and ``sweep``."""
    rows = read_jsonl(os.path.join(out, METRICS))
    report = evaluation.report if evaluation is not None else {}
    return {
        "epochs": state.epoch, "best_epoch": state.best_epoch, "best_valid_elbo": state.best_valid_elbo,
        "stopped_early": state.since_best >= config.patience,
        "training_seconds": sum(r.get("seconds", 0.0) for r in rows),
        "parameters": {"model": sum(t.numel() for t in model.parameters()),
                       "guide": sum(t.numel() for t in guide.parameters())},
        "test": {k: report.get(k) for k in ("num_samples", "log_likelihood", "log_likelihood_stderr", "elbo",
                                            "active_units", "latent_units", "khat_share_above_0.7")} if report else None,
        "evaluation": os.path.basename(evaluation.path) if evaluation is not None else None,
        "units": "nats per datapoint; seconds of training (validation included, final evaluation not)",
    }


def _loggers(config, out, data, device):
    """The loggers ``config.logger`` names, built and checked (before anything is written)."""
    from pyrovae.loggers import LOGGERS

    def images(model, guide):
        from pyrovae.analysis.plots import image_grids

        return image_grids(model, guide, data.valid.x[:10].to(device), data.image_shape, seed=config.seed)

    loggers = [LOGGERS.resolve(name)(out, config, images, config.log_images_every)
               for name in logger_names(config.logger)]
    for logger in loggers:
        logger.check()
    return loggers


def _prepare(config, out, resume, overwrite, log, lock, context):
    """Load and check the data, build the modules, ELBO and objective, and prepare ``out``
    (the first write); every check that can fail on bad input runs before it."""
    device = context.device
    likelihood_cls = lookup(LIKELIHOODS, config.likelihood, "likelihood")
    data = load_dataset(config.data, config.data_dir, binary=likelihood_cls.binary, split_seed=config.split_seed)
    if config.batch_size > len(data.train):
        raise ConfigError(f"--batch-size {config.batch_size} exceeds the {len(data.train)} training examples")
    seed_everything(config.seed)  # before building: initial weights follow --seed
    num_train = len(data.train)
    model, guide = build_model_and_guide(config, data.num_pixels, context.shard_size(num_train), data.image_shape)
    elbo = build_elbo(config, model, steps_per_epoch=math.ceil(num_train / config.batch_size))
    if context.parallel:
        check_data_parallel(model, elbo)
        if config.jit == "on":
            raise ConfigError("--jit compiles the loss of one process; under torchrun DistributedDataParallel "
                              "runs Pyro's ELBO module itself: use --jit auto or off")

    def report(message):  # the plain ELBO runs instead of the compiled one
        print(f"not compiled: {message}", file=log)

    objective = make_objective(config, model, guide, elbo, data.train, device, report)  # checks labels
    dynamic = data.binarization == "dynamic"
    for name in ("valid", "test") + (() if dynamic else ("train",)):
        model.likelihood.check_data(data.split(name).x, f"the {name} split of {config.data}")
    with torch.random.fork_rng():  # one trace of model and guide; the training draws stay as they were
        kl = kl_terms(config.elbo, model, guide, data.train.x[:2], torch.arange(2), num_train)
    out = context.broadcast_object(out)  # a default --out holds a timestamp: rank 0's names the run
    loggers = _loggers(config, out, data, device) if context.is_main else []
    if context.is_main:
        config, resume = prepare_run_dir(out, config, resume, overwrite, lock=lock, kl_terms=kl)  # first write
        print(f"KL terms under --elbo {config.elbo}: " + ", ".join(f"{site} {how}" for site, how in kl.items()),
              file=log)
    config, resume = context.broadcast_object((config, resume))
    if context.parallel:  # each process draws its own noise from here on
        seed_everything(config.seed + 7919 * context.rank)
    if not resume and hasattr(model, "initialize_from_data"):
        model.initialize_from_data(data.train.x)
    model.to(device)
    guide.to(device)
    x0 = context.shard(data.train.x)[:2]
    if dynamic:  # its own generator: the data order stays a function of the seed alone
        x0 = torch.bernoulli(x0, generator=torch.Generator().manual_seed(config.seed))
    with pyro.validation_enabled(True):  # shape and support errors surface here, before the first step
        elbo.loss(model, guide, x0.to(device), torch.arange(2), num_train)
    pyro.clear_param_store()  # drop the check's running-average baselines (shaped for its 2 rows)
    if context.parallel:
        probe = (x0.to(device), torch.arange(2, device=device))
        objective = DataParallelObjective(model, guide, elbo, num_train, context, probe)
    return _Prepared(config, data, model, guide, elbo, objective, resume, out, loggers)


def _evaluate_and_plot(config, out, data, progress, context, epochs):
    """The test-split evaluation of ``best.pt`` and the figures; a signal here says the run is
    saved and how to finish."""
    evaluation, figures = None, []
    try:
        if config.eval_num_samples > 0:
            from pyrovae.analysis.evaluate import evaluate_run

            evaluation = evaluate_run(out, split="test", num_samples=config.eval_num_samples, data=data,
                                      progress=progress if context.is_main else False, device=str(context.device),
                                      context=context)
        if context.is_main:
            from pyrovae.analysis.plots import plot_run
            from pyrovae.runs.load import load_run

            best_run = load_run(out, "best", str(context.device), data)
            figures = plot_run(out, best_run.model, best_run.guide, data)
    except KeyboardInterrupt:
        rest = (f"pyrovae evaluate {out} --num-samples {config.eval_num_samples} && pyrovae plot {out}"
                if evaluation is None and config.eval_num_samples > 0 else f"pyrovae plot {out}")
        raise Interrupted(f"interrupted after training finished ({epochs} epochs, saved in {out}), in the final "
                          f"evaluation; finish it with: {rest}") from None
    return evaluation, figures
