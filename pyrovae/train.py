"""The training loop: Pyro ELBO + torch.optim, validation ELBO, early stopping, checkpoints.

Reads top to bottom: load data, build model and guide, then per epoch a pass over
shuffled minibatches (``loss_and_grads`` then ``optimizer.step``), a validation ELBO
that updates no parameter, a line in ``metrics.jsonl`` and checkpoints
(``last.pt`` every epoch, ``best.pt`` when the validation ELBO improves), written
atomically. A NaN or infinite loss stops training and keeps the last good checkpoint.
"""

import math
import os
import random
import sys
import time
import warnings
from typing import NamedTuple

import numpy as np
import pyro
import torch
from tqdm.auto import tqdm

from pyrovae.build import build_elbo, build_model_and_guide
from pyrovae.checkpoint import (atomic_write_text, describe_mismatch, get_rng_state, load_checkpoint, save_checkpoint,
                                set_rng_state)
from pyrovae.data import batches, load_dataset
from pyrovae.distributed import (SINGLE, DataParallelObjective, check_data_parallel, setup, shard_batches, shard_state,
                                 whole_state)
from pyrovae.errors import CheckpointError, ConfigError, Interrupted, PyrovaeError, StorageError
from pyrovae.inference.kl import kl_terms
from pyrovae.inference.local_fit import fit_local
from pyrovae.inference.marginal import iwae
from pyrovae.jsonio import dumps, read_jsonl
from pyrovae.local import private_param_store
from pyrovae.models import LIKELIHOODS
from pyrovae.objective import make_objective
from pyrovae.optim import make_optimizers
from pyrovae.registry import lookup
from pyrovae.rundir import BEST, CONFIG, LAST, METRICS, prepare_run_dir
from pyrovae.runlock import RunLock
from pyrovae.signals import GracefulStop

__all__ = ["train", "TrainResult", "TrainingDiverged", "resolve_device", "validation_elbo"]


class TrainingDiverged(PyrovaeError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


class TrainResult(NamedTuple):
    run_dir: str  #: where the run was saved
    epochs: int  #: epochs completed
    best_epoch: int  #: epoch of the best validation ELBO (the best.pt checkpoint)
    best_valid_elbo: float  #: nats per datapoint
    stopped_early: bool
    evaluation: object  #: test-split :class:`~pyrovae.evaluate.Evaluation`, or None
    figures: list  #: PNG paths written by :func:`pyrovae.plots.plot_run`


def resolve_device(name):
    """:raises ConfigError: if CUDA is requested but not available."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return torch.device(name)


def seed_everything(seed):
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


VALID_FIT_STEPS = 50  # per-example guides: Adam steps fitting q to the validation data each epoch


def validation_elbo(model, guide, x, seed, device, context=SINGLE):
    """Mean single-sample ELBO over ``x`` (N, P), nats per datapoint; the same random draws
    every call (common random numbers make epochs comparable); the global RNG is untouched.
    A per-example guide has no parameters for these examples: per-example Gaussians are fitted
    to them from the prior for ``VALID_FIT_STEPS`` steps, model frozen. With several processes
    each scores its shard ``x[rank::N]`` and the mean is taken over all of ``x``."""
    x = context.shard(x).to(device)
    with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
        torch.manual_seed(seed)
        if getattr(guide, "local_tables", ()):
            zeros = torch.zeros(len(x), model.latent_dim, device=device)
            guide, _ = fit_local(model, x, zeros, torch.ones_like(zeros), steps=VALID_FIT_STEPS, lr=3e-2)
        with torch.no_grad():
            result = iwae(model, guide, x, num_samples=1, batch_size=1000)
    total, count = context.all_sum(float(result.elbo.sum()), len(x))
    return total / count


def _truncate_metrics(path, last_epoch):
    """Drop metric lines after ``last_epoch`` (written before a checkpoint that never came) and a
    torn last line (a crash mid-append); the file is replaced atomically."""
    if os.path.exists(path):
        keep = [r for r in read_jsonl(path) if r.get("epoch", math.inf) <= last_epoch]
        atomic_write_text(path, "".join(dumps(r, indent=None) + "\n" for r in keep))


def _kept(out):
    """What a failed or stopped run left: the epoch ``last.pt`` holds and how to continue, or
    that no checkpoint was written and the same command starts again."""
    last = os.path.join(out, LAST)
    if not os.path.isfile(last):
        return f"no checkpoint was written, so {out} holds nothing trained; the same command starts the run again"
    try:
        epoch = load_checkpoint(last)["epoch"]
    except (PyrovaeError, KeyError):
        return f"{last} could not be read back"
    return f"{last} is intact (epoch {epoch}); continue with: pyrovae train --out {out} --resume"


@private_param_store
def train(config, out, resume=False, overwrite=False, progress=None, log=sys.stderr):
    """Train ``config``'s model and guide; save the run in ``out``.

    :param TrainConfig config: options (validated here).
    :param str out: run directory; never overwritten unless ``overwrite``.
    :param bool resume: continue the run in ``out`` from ``last.pt``.
    :param progress: show a tqdm bar; None shows it only on a terminal.
    :returns: a :class:`TrainResult`.
    :raises ConfigError, DataError, UnknownNameError, CheckpointError: for bad input,
        before anything is written; ``CheckpointError`` too when another process is writing
        ``out`` (:class:`~pyrovae.runlock.RunLock`), or ``overwrite`` finds files there that are
        not a pyrovae run's.
    :raises TrainingDiverged: when the loss is NaN or infinite; ``last.pt`` keeps the
        last completed epoch.
    :raises KeyboardInterrupt: after SIGINT or SIGTERM, once ``last.pt`` holds the state
        after the current step (resuming from it gives the uninterrupted run's results).

    Started by ``torchrun`` with several processes, it trains data-parallel (see
    :mod:`pyrovae.distributed`): every process returns, and rank 0 alone writes ``out``.
    """
    lock = RunLock()  # rank 0 takes it in prepare_run_dir; held until training, evaluation and figures end
    try:
        return _train(config, out, resume, overwrite, progress, log, lock)
    except OSError as err:  # a full disk, a read-only folder, --out under a file
        raise StorageError(f"could not write the run: {err.strerror or err} ({err.filename or out}); "
                           f"{_kept(out)}") from None
    finally:
        lock.release()


def _train(config, out, resume, overwrite, progress, log, lock):
    config.validate()
    context = setup(resolve_device(config.device))
    device = context.device
    if not context.is_main:
        log = open(os.devnull, "w")
    likelihood_cls = lookup(LIKELIHOODS, config.likelihood, "likelihood")
    data = load_dataset(config.data, config.data_dir, binary=likelihood_cls.binary, split_seed=config.split_seed)
    if config.batch_size > len(data.train):
        raise ConfigError(f"--batch-size {config.batch_size} exceeds the {len(data.train)} training examples")
    seed_everything(config.seed)  # before building: initial weights follow --seed
    num_train = len(data.train)
    model, guide = build_model_and_guide(config, data.num_pixels, context.shard_size(num_train), data.image_shape)
    elbo = build_elbo(config, model)
    if context.parallel:
        check_data_parallel(model, elbo)
        if config.jit:
            raise ConfigError("--jit compiles the loss of one process; under torchrun DistributedDataParallel "
                              "runs Pyro's ELBO module itself: drop --jit")
    objective = make_objective(config, model, guide, elbo, data.train, device)  # checks labels
    dynamic = data.binarization == "dynamic"
    for name in ("valid", "test") + (() if dynamic else ("train",)):
        model.likelihood.check_data(data.split(name).x, f"the {name} split of {config.data}")
    with torch.random.fork_rng():  # one trace of model and guide; the training draws stay as they were
        kl = kl_terms(config.elbo, model, guide, data.train.x[:2], torch.arange(2), num_train)
    out = context.broadcast_object(out)  # a default --out holds a timestamp: rank 0's names the run
    if context.is_main:
        config, resume = prepare_run_dir(out, config, resume, overwrite, lock=lock, kl_terms=kl)  # first write
        print(f"KL terms under --elbo {config.elbo}: " + ", ".join(f"{site} {how}" for site, how in kl.items()),
              file=log)
    config, resume = context.broadcast_object((config, resume))
    if context.parallel:  # each process draws its own noise from here on
        seed_everything(config.seed + 7919 * context.rank)

    data_gen = torch.Generator().manual_seed(config.seed)
    if not resume and hasattr(model, "initialize_from_data"):
        model.initialize_from_data(data.train.x)
    model.to(device)
    guide.to(device)
    train_x = context.shard(data.train.x)  # the rows this process owns and reads
    x0 = train_x[:2]
    if dynamic:  # its own generator: the data order stays a function of the seed alone
        x0 = torch.bernoulli(x0, generator=torch.Generator().manual_seed(config.seed))
    with pyro.validation_enabled(True):  # shape and support errors surface here, before the first step
        elbo.loss(model, guide, x0.to(device), torch.arange(2), num_train)
    pyro.clear_param_store()  # drop the check's running-average baselines (shaped for its 2 rows)
    drop_last = config.elbo == "tracegraph"  # Pyro's decaying-average baselines need one batch shape
    seen = num_train - (num_train % config.batch_size if drop_last else 0)  # examples per epoch
    optimizer = make_optimizers([model, guide], config.lr, config.local_lr)
    if context.parallel:
        probe = (x0.to(device), torch.arange(2, device=device))
        objective = DataParallelObjective(model, guide, elbo, num_train, context, probe)

    def epoch_batches():
        if context.parallel:
            return shard_batches(context, train_x, num_train, config.batch_size, data_gen, dynamic, drop_last)
        return ((x, idx, len(idx)) for x, idx in batches(data.train, config.batch_size, data_gen, dynamic,
                                                           drop_last=drop_last))

    start_epoch, step, best, best_epoch, since_best = 0, 0, -math.inf, 0, 0
    # where an interrupted epoch stopped: batches done, data RNG at its start, its loss so far
    position = {"batch": 0, "epoch_data_rng": data_gen.get_state(), "partial_total": 0.0}
    if resume:
        state = load_checkpoint(os.path.join(out, LAST), map_location=device)
        try:
            guide_state, optim_state = shard_state(context, guide, state["guide"], state["optimizer"])
            model.load_state_dict(state["model"])
            guide.load_state_dict(guide_state)
            optimizer.load_state_dict(optim_state)
            for name, value in state.get("param_store", {}).items():  # TraceGraph_ELBO's decaying averages
                pyro.get_param_store()[name] = value
            ranks = state.get("rank_rng", [state["rng"]])
            set_rng_state(ranks[context.rank] if len(ranks) == context.world_size else state["rng"], data_gen)
            start_epoch, step = state["epoch"], state["step"]
            best, best_epoch, since_best = state["best_valid_elbo"], state["best_epoch"], state["since_best"]
            position = {key: state[key] for key in position}
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as err:
            raise CheckpointError(f"--resume: {os.path.join(out, LAST)} does not fit {os.path.join(out, CONFIG)} "
                                  f"({describe_mismatch(err)}); restore the matching config.json, or start a new run "
                                  "with another --out") from None
        if context.is_main:
            _truncate_metrics(os.path.join(out, METRICS), start_epoch)

    def checkpoint(epoch, **where):  # every process calls it (per-example tables are gathered)
        guide_state, optim_state = whole_state(context, guide, optimizer, num_train)
        rng = get_rng_state(data_gen)
        return {
            "model": model.state_dict(), "guide": guide_state, "optimizer": optim_state,
            "param_store": {name: value.detach().clone() for name, value in pyro.get_param_store().items()},
            "rng": rng, "epoch": epoch, "step": step, "best_valid_elbo": best,
            "best_epoch": best_epoch, "since_best": since_best,
            **({"rank_rng": context.gather_objects(rng)} if context.parallel else {}),
            **{"batch": 0, "epoch_data_rng": data_gen.get_state(), "partial_total": 0.0, **where},
        }

    def save(name, state):
        if context.is_main:
            save_checkpoint(os.path.join(out, name), state)

    def stop_here(signal_name, where):
        raise Interrupted(f"{signal_name}: stopped cleanly at step {step}; {where} is saved in "
                          f"{os.path.join(out, LAST)}; continue with: pyrovae train --out {out} --resume")

    def stop_requested():  # every process stops at the same step, or the collectives would not match
        asked = bool(stop.requested)
        return context.all_sum(float(asked))[0] > 0 if context.parallel else asked

    def step_loss(x, idx, size):  # with several processes, this one's share of the batch's loss
        return objective(x, idx, size) if context.parallel else objective(x, idx)

    completed = start_epoch
    stopped_early = since_best >= config.patience
    quiet = not context.is_main or (progress is not None and not progress)
    bar = tqdm(range(start_epoch, config.epochs), desc="train", unit="epoch", initial=start_epoch,
               total=config.epochs, disable=True if quiet else None)  # None: only on a tty
    # Pyro's validation ran on the check above; the hot loop skips those checks (a NaN still stops training)
    with GracefulStop() as stop, pyro.validation_enabled(False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Encountered NaN")  # Pyro's; a NaN loss stops training below
        try:
            for epoch in bar:
                if stopped_early:
                    break
                t0 = time.perf_counter()
                skip, total = position["batch"], position["partial_total"]
                if skip:  # resume inside this epoch: replay its data order up to where it stopped
                    data_gen.set_state(position["epoch_data_rng"])
                epoch_data_rng = data_gen.get_state()
                model.train(), guide.train()
                for batch, (x, idx, size) in enumerate(epoch_batches(), 1):
                    if batch <= skip:
                        continue
                    x, idx = x.to(device), idx.to(device)
                    if hasattr(elbo, "set_step"):  # annealed estimators (relaxed): tau at this step
                        elbo.set_step(step)
                    # coordinate ascent: the batch's own rows first (none without --local-steps)
                    optimizer.local_updates(lambda: step_loss(x, idx, size), config.local_steps)
                    loss = step_loss(x, idx, size)
                    if context.parallel:  # one collective: the batch's loss, and whether any process was signalled
                        loss, asked = context.all_sum(loss, float(bool(stop.requested)))
                    step += 1
                    if not math.isfinite(loss):
                        kept = (f"The last good checkpoint (epoch {completed}) is kept in {os.path.join(out, LAST)}; "
                                "try a lower --lr" if completed else "No checkpoint was written (it diverged in the "
                                f"first epoch), so {out} holds nothing trained: run the same command with a lower "
                                "--lr, no --overwrite needed")
                        raise TrainingDiverged(f"the loss became {loss} at step {step} (epoch {epoch + 1}); "
                                               f"training stopped. {kept}")
                    optimizer.step(local=not config.local_steps)  # SVI: joint; coordinate ascent: decoder
                    total += loss * size / num_train  # this batch's share of the epoch's loss
                    if asked if context.parallel else stop.requested:
                        save(LAST, checkpoint(completed, batch=batch, epoch_data_rng=epoch_data_rng,
                                              partial_total=total))
                        stop_here(stop.requested or "signal", f"epoch {epoch + 1}, batch {batch}")
                position.update(batch=0, partial_total=0.0)  # later epochs start from their beginning
                model.eval(), guide.eval()
                valid = validation_elbo(model, guide, data.valid.x, config.seed + 1, device, context)
                completed = epoch + 1
                if valid > best:
                    best, best_epoch, since_best = valid, completed, 0
                else:
                    since_best += 1
                stopped_early = since_best >= config.patience
                record = {"epoch": completed, "step": step, "train_elbo": -total / seen,
                          "valid_elbo": valid, "seconds": time.perf_counter() - t0}
                if context.is_main:  # before the checkpoint: a resume from the previous one drops this line
                    with open(os.path.join(out, METRICS), "a") as f:
                        f.write(dumps(record, indent=None) + "\n")
                state = checkpoint(completed)
                if best_epoch == completed:
                    save(BEST, state)
                save(LAST, state)
                bar.set_postfix(train=f"{record['train_elbo']:.2f}", valid=f"{valid:.2f}")
                if bar.disable and (completed % 10 == 0 or completed == config.epochs or stopped_early):
                    print(f"epoch {completed}/{config.epochs}: train ELBO {record['train_elbo']:.3f}, "
                          f"valid ELBO {valid:.3f} nats", file=log, flush=True)
                if stopped_early:
                    print(f"early stopping at epoch {completed}: no better validation ELBO for "
                          f"{config.patience} epochs (best {best:.3f} at epoch {best_epoch})", file=log)
                if stop_requested():
                    stop_here(stop.requested or "signal", f"epoch {completed}")
        except KeyboardInterrupt as err:
            if isinstance(err, Interrupted):
                raise
            raise Interrupted(f"{stop.requested or 'SIGINT'}, twice: stopped at once; {_kept(out)}") from None
        finally:
            bar.close()

    context.barrier()  # rank 0 has written best.pt
    evaluation, figures = None, []
    trained = f"training finished ({completed} epochs, saved in {out})"
    try:
        if config.eval_num_samples > 0:
            from pyrovae.evaluate import evaluate_run

            evaluation = evaluate_run(out, split="test", num_samples=config.eval_num_samples, data=data,
                                      progress=progress if context.is_main else False, device=str(device),
                                      context=context)
        if context.is_main:
            from pyrovae.plots import plot_run
            from pyrovae.run import load_run

            best_run = load_run(out, "best", str(device), data)
            figures = plot_run(out, best_run.model, best_run.guide, data)
    except KeyboardInterrupt:
        rest = (f"pyrovae evaluate {out} --num-samples {config.eval_num_samples} && pyrovae plot {out}"
                if evaluation is None and config.eval_num_samples > 0 else f"pyrovae plot {out}")
        raise Interrupted(f"interrupted after {trained}, in the final evaluation; finish it with: {rest}") from None
    context.barrier()
    return TrainResult(out, completed, best_epoch, best, stopped_early, evaluation, figures)
