"""``pyrovae sweep``: a grid of options × seeds from one file, one run directory each, resumable.

The file is a :mod:`configuration file <pyrovae.config_file>` whose options every run shares,
plus a ``[sweep]`` table::

    # guides.toml
    data = "digits"
    epochs = 200

    [sweep]
    seeds = [0, 1, 2]                     # crossed with everything below
    variants = [                          # settings that go together, one run set each
      { guide = "amortized" },
      { guide = "iaf" },
      { guide = "per-example", local_steps = 10 },
    ]
    grid = { prior = ["standard-normal", "vamp"] }   # optional: every combination, crossed

Runs are variants × grid × seeds, in that order. Each is named by its own settings
(``guide=per-example_local_steps=10_seed=1``) and trained into ``OUT/NAME`` by
:func:`pyrovae.train`. A run whose ``summary.json`` exists finished and is skipped; a run with a
checkpoint continues from it (``--resume``); anything else starts. So an interrupted sweep,
started again with the same command, continues where it stopped without rerunning a finished
run. ``OUT/sweep.json`` lists the runs and their options; ``OUT/logs/NAME.log`` holds each run's
output.

With ``workers`` > 1 the runs go to that many ``pyrovae train`` processes, each with
cores / workers threads (unless ``OMP_NUM_THREADS`` is set). Components registered in a script
with ``register()`` exist only in that script's process: name them by import string or entry
point to use them with workers.
"""

import itertools
import os
import subprocess
import sys
import time
from typing import NamedTuple

from pyrovae.config import TrainConfig, option_text
from pyrovae.config_file import read_config_file, resolve_paths
from pyrovae.errors import ConfigError, Interrupted, PyrovaeError
from pyrovae.jsonio import write_json
from pyrovae.runs.rundir import CONFIG, LAST, RESUMABLE, SUMMARY

__all__ = ["SweepRun", "SweepResult", "plan_sweep", "read_sweep", "sweep"]

PLAN = "sweep.json"
SWEEP_KEYS = ("seeds", "variants", "grid")


class SweepRun(NamedTuple):
    name: str  #: the run's folder name: its own settings, then the seed
    settings: dict  #: the options that set it apart (variant, grid point and seed)
    config: TrainConfig  #: its whole configuration


class SweepResult(NamedTuple):
    out: str  #: the sweep's folder
    runs: list  #: the :class:`SweepRun` s, in order
    status: dict  #: name -> ``"finished"`` (this call), ``"skipped"`` (finished before) or ``"failed: ..."``


def _name(settings):
    parts = [f"{k}={option_text(v)}" for k, v in settings.items()]
    return "_".join(parts).replace(os.sep, "-").replace(":", "-").replace(" ", "")


def plan_sweep(base, seeds=(0,), variants=({},), grid=None, source="the sweep"):
    """The runs of a sweep: ``variants`` × every combination of ``grid`` × ``seeds``.

    :param dict base: options every run shares (:class:`~pyrovae.config.TrainConfig` fields).
    :param seeds: the ``seed`` of each repetition.
    :param variants: dicts of options that go together (default: one empty variant).
    :param dict grid: option -> list of values, crossed.
    :returns: a list of :class:`SweepRun`.
    :raises ConfigError: for an option that is not a field, a value of the wrong type, or two runs
        with the same settings.
    """
    grid = grid or {}
    if not seeds or not variants or any(not isinstance(v, list) or not v for v in grid.values()):
        raise ConfigError(f"{source}: seeds, variants and each grid entry need at least one value (lists)")
    runs, names = [], set()
    for variant, point, seed in itertools.product(variants, itertools.product(*grid.values()), seeds):
        settings = {**variant, **dict(zip(grid, point)), "seed": seed}
        config = TrainConfig.from_dict({**base, **settings}, source=source).validate(source=source)
        name = _name(settings)
        if name in names:
            raise ConfigError(f"{source}: two runs have the same settings ({name}); make the variants differ")
        names.add(name)
        runs.append(SweepRun(name, settings, config))
    return runs


def read_sweep(path):
    """The :class:`SweepRun` s of a sweep file (see the module doc).

    :raises ConfigError: naming the file and the key for anything wrong in it.
    """
    base, extra = read_config_file(path, allow=("sweep",))
    spec = extra.get("sweep")
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: a sweep file needs a [sweep] table with seeds, variants and/or grid")
    unknown = sorted(set(spec) - set(SWEEP_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown keys {unknown} in [sweep]; valid: {', '.join(SWEEP_KEYS)}")
    seeds = spec.get("seeds", [0])
    variants = spec.get("variants", [{}])
    grid = spec.get("grid", {})
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f'{path}: key "sweep.seeds" must be a list of integers, got {seeds!r}')
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        raise ConfigError(f'{path}: key "sweep.variants" must be a list of tables of options, got {variants!r}')
    if not isinstance(grid, dict):
        raise ConfigError(f'{path}: key "sweep.grid" must be a table of option = [values], got {grid!r}')
    folder = os.path.dirname(os.path.abspath(path))
    variants = [resolve_paths(v, folder) for v in variants]
    return plan_sweep(base, seeds, variants, grid, source=path)


def _state(run_dir, config):
    """``"finished"``, ``"resume"`` or ``"start"``; a saved run with other options is an error."""
    saved = os.path.join(run_dir, CONFIG)
    if not os.path.isfile(saved):
        return "start"
    old, new = TrainConfig.load(saved).to_dict(), config.to_dict()
    diff = [k for k in old if k not in RESUMABLE and old[k] != new[k]]
    if diff:
        raise ConfigError(f"{run_dir} holds a run with other options ({', '.join(diff)}) than the sweep asks for; "
                          "sweep into another folder (--out)")
    if os.path.isfile(os.path.join(run_dir, SUMMARY)):
        return "finished"
    return "resume" if os.path.isfile(os.path.join(run_dir, LAST)) else "start"


def _run_here(run, run_dir, state, log_path):
    from pyrovae.runs.train import train

    with open(log_path, "a") as log:
        train(run.config, run_dir, resume=state == "resume", progress=False, log=log)


def _command(run, run_dir, state, plans):
    plan = os.path.join(plans, run.name + ".json")
    run.config.save(plan)
    return [sys.executable, "-m", "pyrovae", "train", "--config", plan, "--out", run_dir] + (
        ["--resume"] if state == "resume" else [])


def sweep(runs, out, workers=1, progress=None, log=sys.stderr):
    """Train every run of ``runs`` (from :func:`read_sweep` or :func:`plan_sweep`) into
    ``out/NAME``, skipping finished ones and resuming started ones (see the module doc).

    :param int workers: runs at a time; 1 trains in this process, more start ``pyrovae train``
        processes.
    :returns: a :class:`SweepResult`.
    :raises ConfigError: if a run folder holds a run with other options.
    :raises Interrupted: after SIGINT/SIGTERM: running runs are stopped (they checkpoint), and the
        same call continues them.
    """
    from tqdm.auto import tqdm

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers must be a positive integer, got {workers!r}")
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    write_json(os.path.join(out, PLAN), {"runs": [{"name": r.name, "settings": r.settings,
                                                   "config": r.config.to_dict()} for r in runs]})
    states = {r.name: _state(os.path.join(out, r.name), r.config) for r in runs}
    status = {name: "skipped" for name, s in states.items() if s == "finished"}
    todo = [r for r in runs if states[r.name] != "finished"]
    print(f"sweep: {len(runs)} runs in {out}: {len(status)} finished before, "
          f"{sum(states[r.name] == 'resume' for r in todo)} to continue, "
          f"{sum(states[r.name] == 'start' for r in todo)} to start", file=log)
    bar = tqdm(total=len(runs), initial=len(status), desc="sweep", unit="run",
               disable=None if progress is None else not progress)
    try:
        if workers == 1:
            for run in todo:
                _one_here(run, out, states[run.name], status, log)
                bar.update(1)
        else:
            _pool(todo, out, states, status, workers, bar, log)
    except KeyboardInterrupt:
        raise Interrupted(f"sweep stopped; {sum(s == 'finished' for s in status.values())} runs finished in this "
                          f"call; run the same command again to continue the rest") from None
    finally:
        bar.close()
    return SweepResult(out, runs, status)


def _one_here(run, out, state, status, log):
    t0 = time.perf_counter()
    try:
        _run_here(run, os.path.join(out, run.name), state, os.path.join(out, "logs", run.name + ".log"))
        status[run.name] = "finished"
    except PyrovaeError as err:
        status[run.name] = f"failed: {err}"
    print(f"{run.name}: {status[run.name]} ({time.perf_counter() - t0:.0f} s)", file=log, flush=True)


def _pool(todo, out, states, status, workers, bar, log):
    plans = os.path.join(out, ".plans")
    os.makedirs(plans, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    queue, running = list(todo), {}
    try:
        while queue or running:
            while queue and len(running) < workers:
                run = queue.pop(0)
                run_dir = os.path.join(out, run.name)
                logf = open(os.path.join(out, "logs", run.name + ".log"), "a")
                proc = subprocess.Popen(_command(run, run_dir, states[run.name], plans), stdout=logf,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
                running[proc] = (run, logf, time.perf_counter())
            time.sleep(0.2)
            for proc in [p for p in running if p.poll() is not None]:
                run, logf, t0 = running.pop(proc)
                logf.close()
                status[run.name] = "finished" if proc.returncode == 0 else (
                    f"failed: exit status {proc.returncode}, see {os.path.join(out, 'logs', run.name + '.log')}")
                print(f"{run.name}: {status[run.name]} ({time.perf_counter() - t0:.0f} s)", file=log, flush=True)
                bar.update(1)
    except KeyboardInterrupt:
        for proc in running:  # each checkpoints its step and exits (pyrovae train's graceful stop)
            proc.terminate()
        for proc, (run, logf, _) in running.items():
            if proc.wait() == 0:  # it had finished before the signal reached it
                status[run.name] = "finished"
            logf.close()
        raise
