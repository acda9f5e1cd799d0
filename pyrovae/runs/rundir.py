"""Run directories: created once, never silently overwritten, resumed only with a matching config;
``--overwrite`` replaces only a pyrovae run, and only its own files."""

import fnmatch
import os

from pyrovae.config import TrainConfig
from pyrovae.errors import CheckpointError, ConfigError
from pyrovae.runs.runlock import LOCK

__all__ = ["CONFIG", "LAST", "BEST", "METRICS", "SUMMARY", "BASELINE", "RUN_FILES", "prepare_run_dir", "unstarted", "RESUMABLE"]

CONFIG, LAST, BEST, METRICS = "config.json", "last.pt", "best.pt", "metrics.jsonl"
SUMMARY = "summary.json"  # written last by a finished pyrovae train
BASELINE = "baseline_labelled_only.json"  # semi-supervised runs: the labels-only classifier's accuracy
# the files pyrovae writes into a run directory; --overwrite removes these and nothing else
RUN_FILES = (CONFIG, LAST, BEST, METRICS, LOCK, BASELINE, SUMMARY, "mlflow_run.json", "events.out.tfevents.*", ".tmp-*", "eval_*.json", "impute_*.json", "impute_*.png",
             "compare_inference*.json", "compare_inference*.png", "compare_estimators.json", "estimator_*.png",
             "posterior_check*.json", "posterior_check*.png", "khat_*.png", "collapse_*.png", "curves.png",
             "latent.png", "samples.png", "reconstructions.png", "interpolations.png", "traversals.png")
# options a resumed run may change: they do not alter what was already computed
RESUMABLE = ("epochs", "patience", "eval_num_samples", "device", "jit", "checkpoint_every", "track_loglik_every",
             "track_num_samples", "logger", "tracking_uri", "log_images_every")


def _is_run_file(name):
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in RUN_FILES)


def _check_run(out):
    """The names in ``out``, after checking that it holds a pyrovae run and nothing else.

    :raises CheckpointError: naming what is not a run's.
    """
    config = os.path.join(out, CONFIG)
    if not os.path.isfile(config):
        raise CheckpointError(f"--overwrite replaces a pyrovae run directory, and {out} holds no {CONFIG}: "
                              "nothing was deleted; choose another --out, or empty the folder yourself")
    try:
        TrainConfig.load(config)
    except ConfigError as err:
        raise CheckpointError(f"--overwrite: {config} is not a pyrovae run's configuration ({err}); nothing was "
                              "deleted; choose another --out") from None
    names = os.listdir(out)
    foreign = sorted(n for n in names if not _is_run_file(n) or not os.path.isfile(os.path.join(out, n)))
    if foreign:
        shown = ", ".join(foreign[:8]) + (f" and {len(foreign) - 8} more" if len(foreign) > 8 else "")
        raise CheckpointError(f"--overwrite replaces only a run's own files, and {out} also holds {shown}: nothing "
                              "was deleted; move them elsewhere, or choose another --out")
    return names


def unstarted(out):
    """True if ``out`` holds a run that failed before its first checkpoint: its configuration
    and at most a metrics line and partial writes, no ``last.pt`` or ``best.pt``. Such a folder
    is reused by a rerun or ``--resume`` without ``--overwrite``: nothing in it was trained."""
    if not os.path.isdir(out) or not os.path.isfile(os.path.join(out, CONFIG)):
        return False
    names = set(os.listdir(out))
    return not names & {LAST, BEST} and all(n in (CONFIG, LOCK, METRICS) or n.startswith(".tmp-") for n in names)


def _clear(out, names):
    for name in names:
        if name != LOCK:  # held by this process
            os.unlink(os.path.join(out, name))


def prepare_run_dir(out, config, resume=False, overwrite=False, lock=None, **record):
    """Create ``out`` for a new run, or check it for ``--resume``.

    :param lock: a :class:`~pyrovae.runs.runlock.RunLock`, taken before anything in ``out`` is read or
        changed, and held by the caller for as long as it writes the run.
    :param record: facts written beside the options in a new run's ``config.json``.
    :returns: ``(config, resumed)``: the configuration to train with (``config`` for a new run;
        for a resumed run the saved one, updated with the options in :data:`RESUMABLE`), and
        whether training continues from ``last.pt``. A run that failed before its first
        checkpoint (:func:`unstarted`) starts again from the beginning, with or without ``resume``.
    :raises CheckpointError: if ``out`` exists and is not empty without ``--resume`` or
        ``--overwrite``; if ``--overwrite`` finds something there that is not a pyrovae run, or
        files that are not the run's (:data:`RUN_FILES`); if another process holds the lock; if
        ``--resume`` finds no run there; if the requested options differ from the saved
        ``config.json`` in anything but :data:`RESUMABLE`.
    """
    exists = os.path.isdir(out) and bool(set(os.listdir(out)) - {LOCK})  # a lone lock file is no run
    if resume:
        if overwrite:
            raise CheckpointError("--resume and --overwrite contradict each other; pass one")
        if lock is not None and os.path.isdir(out):
            lock.acquire(out)
        fresh = unstarted(out)
        if not fresh and (not os.path.isfile(os.path.join(out, CONFIG)) or not os.path.isfile(os.path.join(out, LAST))):
            raise CheckpointError(f"--resume: {out} holds no run ({CONFIG} and {LAST} expected)")
        saved = TrainConfig.load(os.path.join(out, CONFIG))
        new, old = config.to_dict(), saved.to_dict()
        diff = [f"{k}: saved {old[k]!r}, requested {new[k]!r}" for k in old if k not in RESUMABLE and old[k] != new[k]]
        if diff:
            raise CheckpointError(
                f"--resume: the options differ from {os.path.join(out, CONFIG)} ({'; '.join(diff)}); "
                "resume with the saved options, or start a new run with another --out"
            )
        _clear(out, [n for n in os.listdir(out) if n.startswith(".tmp-") or (fresh and n == METRICS)])
        return TrainConfig.from_dict({**old, **{k: new[k] for k in RESUMABLE}}), not fresh
    if unstarted(out):  # nothing was trained here: start again
        if lock is not None:
            lock.acquire(out)
        _clear(out, os.listdir(out))
    elif exists:
        if not overwrite:
            raise CheckpointError(
                f"run directory {out} already exists and is not empty; pass --resume to continue it, "
                "--overwrite to replace it, or choose another --out"
            )
        _check_run(out)  # before the lock file is written into the folder
        if lock is not None:
            lock.acquire(out)
        _clear(out, _check_run(out))
    os.makedirs(out, exist_ok=True)
    if lock is not None:
        lock.acquire(out)
    config.save(os.path.join(out, CONFIG), **record)
    return config, False
