"""Run directories: created once, never silently overwritten, resumed only with a matching config."""

import os
import shutil

from pyrovae.config import TrainConfig
from pyrovae.errors import CheckpointError

__all__ = ["CONFIG", "LAST", "BEST", "METRICS", "prepare_run_dir", "RESUMABLE"]

CONFIG, LAST, BEST, METRICS = "config.json", "last.pt", "best.pt", "metrics.jsonl"
# options a resumed run may change: they do not alter what was already computed
RESUMABLE = ("epochs", "patience", "eval_num_samples", "device", "jit")


def prepare_run_dir(out, config, resume=False, overwrite=False, **record):
    """Create ``out`` for a new run, or check it for ``--resume``.

    :param record: facts written beside the options in a new run's ``config.json``.
    :returns: the configuration to train with: ``config`` for a new run; for a resumed run
        the saved one, updated with the options in :data:`RESUMABLE`.
    :raises CheckpointError: if ``out`` exists and is not empty without ``--resume`` or
        ``--overwrite``; if ``--resume`` finds no run there; if the requested options differ
        from the saved ``config.json`` in anything but :data:`RESUMABLE`.
    """
    exists = os.path.isdir(out) and bool(os.listdir(out))
    if resume:
        if overwrite:
            raise CheckpointError("--resume and --overwrite contradict each other; pass one")
        if not os.path.isfile(os.path.join(out, CONFIG)) or not os.path.isfile(os.path.join(out, LAST)):
            raise CheckpointError(f"--resume: {out} holds no run ({CONFIG} and {LAST} expected)")
        saved = TrainConfig.load(os.path.join(out, CONFIG))
        new, old = config.to_dict(), saved.to_dict()
        diff = [f"{k}: saved {old[k]!r}, requested {new[k]!r}" for k in old if k not in RESUMABLE and old[k] != new[k]]
        if diff:
            raise CheckpointError(
                f"--resume: the options differ from {os.path.join(out, CONFIG)} ({'; '.join(diff)}); "
                "resume with the saved options, or start a new run with another --out"
            )
        for name in os.listdir(out):  # partial writes of a process killed mid-checkpoint
            if name.startswith(".tmp-"):
                os.unlink(os.path.join(out, name))
        return TrainConfig.from_dict({**old, **{k: new[k] for k in RESUMABLE}})
    if exists:
        if not overwrite:
            raise CheckpointError(
                f"run directory {out} already exists and is not empty; pass --resume to continue it, "
                "--overwrite to replace it, or choose another --out"
            )
        shutil.rmtree(out)
    os.makedirs(out, exist_ok=True)
    config.save(os.path.join(out, CONFIG), **record)
    return config
