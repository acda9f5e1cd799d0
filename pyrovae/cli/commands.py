"""What each command does: turn parsed arguments into a call of the Python API, and print.

Heavy modules are imported inside the command that uses them, so ``pyrovae --help`` and
argument errors do not wait for them.
"""

import dataclasses
import os
import sys
import time

from pyrovae.cli.options import ais_options
from pyrovae.cli.parser import FRESH_OPTIONS
from pyrovae.cli.report import estimator_lines, label_lines
from pyrovae.config import TrainConfig
from pyrovae.errors import ConfigError
from pyrovae.jsonio import dumps
from pyrovae.registry import absolute_import_string
from pyrovae.runs.rundir import CONFIG

__all__ = ["COMMANDS", "config_from_args"]

DEFAULTS = TrainConfig()
COMPONENTS = ("model", "prior", "likelihood", "guide", "net", "elbo")


def _absolute(path):
    return None if path is None else os.path.abspath(path)


def config_from_args(args):
    """The TrainConfig of ``pyrovae train``: defaults (or, for --resume, the saved config)
    updated with the options of ``--config FILE``, then with those given on the command line."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if getattr(args, f.name, None) is not None}
    if "data_dir" in given:
        given["data_dir"] = _absolute(given["data_dir"])
    if given.get("data", "").endswith((".npy", ".npz")):
        given["data"] = _absolute(given["data"])
    for kind in COMPONENTS:  # a plugin file is found from any working directory
        if kind in given:
            given[kind] = absolute_import_string(given[kind])
    if getattr(args, "config", None):
        from pyrovae.config_file import read_config_file

        from_file, _ = read_config_file(args.config)  # its relative paths are the file's folder's
        given = {**from_file, **given}  # the command line overrides the file
    base = DEFAULTS
    if args.resume:
        if args.out is None:
            raise ConfigError("--resume needs --out, the run directory to continue")
        saved = os.path.join(args.out, CONFIG)
        if os.path.isfile(saved):
            base = TrainConfig.load(saved)
    return dataclasses.replace(base, **given)


def cmd_train(args):
    from pyrovae.runs.train import train
    from pyrovae.training.distributed import teardown

    config = config_from_args(args)
    stem = os.path.splitext(os.path.basename(config.data))[0]
    out = args.out or os.path.join("runs", f"{stem}-{config.model}-{config.guide}-{config.elbo}-"
                                           f"{time.strftime('%Y%m%d-%H%M%S')}")
    t0 = time.perf_counter()
    try:
        result = train(config, out, resume=args.resume, overwrite=args.overwrite)
    except BaseException:
        teardown()
        raise
    teardown(synchronize=True)
    if os.environ.get("RANK", "0") != "0":  # data-parallel (torchrun): rank 0 reports
        return 0
    minutes = (time.perf_counter() - t0) / 60
    print(f"run saved in {result.run_dir} ({result.epochs} epochs, best validation ELBO "
          f"{result.best_valid_elbo:.3f} nats at epoch {result.best_epoch}, {minutes:.1f} min)")
    if result.evaluation is not None:
        r = result.evaluation.report
        print(f"test log-likelihood (IWAE, K={r['num_samples']}): {r['log_likelihood']:.3f} "
              f"± {r['log_likelihood_stderr']:.3f} nats per datapoint; ELBO {r['elbo']:.3f}; "
              f"active units {r['active_units']}/{r.get('latent_units', r['latent_dim'])}")
        for line in label_lines(r, result.baseline):
            print(line)
        print(f"evaluation saved in {result.evaluation.path}")
    if result.figures:
        print("figures: " + ", ".join(os.path.basename(p) for p in result.figures))
    return 0


def cmd_evaluate(args):
    from pyrovae.analysis.evaluate import evaluate_run
    from pyrovae.runs.train import resolve_device

    device = resolve_device(args.device)
    ev = evaluate_run(args.run_dir, split=args.split, num_samples=args.num_samples, seed=args.seed,
                      checkpoint=args.checkpoint, device=str(device), batch_size=args.batch_size,
                      inference=args.inference, refine_steps=args.refine_steps, method=args.method,
                      ais_options=ais_options(args), num_examples=args.num_examples)
    r = ev.report
    print(dumps(r))
    if args.method == "ais":
        a = r["ais"]
        print(f"log p(x): AIS {r['log_likelihood']:.3f} ± {r['log_likelihood_stderr']:.3f} "
              f"(Monte Carlo error {r['log_likelihood_mc_stderr']:.3f}; T = {a['num_steps']}, C = {a['num_chains']}, "
              f"acceptance {a['acceptance_mean']:.2f}, {ev.timing['ais']:.1f} s); IWAE {r['log_likelihood_iwae']:.3f} "
              f"± {r['log_likelihood_iwae_stderr']:.3f} (K = {r['num_samples']}, {ev.timing['iwae']:.1f} s)",
              file=sys.stderr)
    if r["khat_median"] is None:
        print(f"PSIS k-hat: not computed ({r.get('khat_note', 'no finite k-hat')})", file=sys.stderr)
    else:
        print(f"PSIS k-hat: {r['khat_share_above_0.7']:.1%} of {r['num_examples']} datapoints above 0.7 "
              f"(median {r['khat_median']:.2f}, max {r['khat_max']:.2f}); estimates there are unreliable",
              file=sys.stderr)
    if r.get("collapsed"):
        print(f"warning: posterior collapse: total KL(q(z|x) || p(z)) is {sum(r['kl_per_dimension']):.3f} nats, "
              f"q ignores x", file=sys.stderr)
    elif r.get("mutual_information") is not None:
        units = r.get("latent_units", r["latent_dim"])
        print(f"posterior collapse: no ({r['active_units']} of {units} units active, "
              f"I(x; z) = {r['mutual_information']:.2f} nats)", file=sys.stderr)
    for line in label_lines(r):
        print(line, file=sys.stderr)
    print(f"saved in {ev.path} and {', '.join(ev.figures)} ({ev.seconds:.1f} s)", file=sys.stderr)
    return 0


def cmd_bdmc(args):
    from pyrovae.analysis.bdmc import bdmc_run
    from pyrovae.runs.train import resolve_device

    result = bdmc_run(args.run_dir, num_examples=args.num_examples, num_samples=args.num_samples, seed=args.seed,
                      checkpoint=args.checkpoint, options=ais_options(args), device=str(resolve_device(args.device)))
    r = result.report
    a = r["ais"]
    print(f"BDMC on {r['num_examples']} examples simulated from the model, T = {a['num_steps']}, C = {a['num_chains']} "
          f"(nats per datapoint, mean ± standard error):")
    for key, name in (("lower", "forward AIS (lower bound)"), ("upper", "reverse AIS (upper bound)"),
                      ("gap", "gap (upper - lower)"), ("iwae", f"IWAE (K = {r['num_samples']})"),
                      ("iwae_below_lower", "lower bound - IWAE")):
        print(f"  {name:28} {r[key][0]:10.3f} ± {r[key][1]:.3f}")
    print(f"  largest per-example gap {r['gap_max']:.3f}; HMC acceptance {a['acceptance_forward']:.2f} forward, "
          f"{a['acceptance_reverse']:.2f} reverse")
    print(f"saved in {result.path} and {result.figure}")
    return 0


def cmd_plot(args):
    from pyrovae.analysis.plots import plot_run
    from pyrovae.runs.load import load_run
    from pyrovae.runs.train import resolve_device

    run = load_run(args.run_dir, args.checkpoint, str(resolve_device(args.device)))
    for path in plot_run(args.run_dir, run.model, run.guide, run.data, split=args.split):
        print(path)
    return 0


def cmd_impute(args):
    from pyrovae.analysis.impute import impute_run
    from pyrovae.runs.train import resolve_device

    result = impute_run(args.run_dir, mask=args.mask, missing_fraction=args.missing_fraction, method=args.method,
                        num_examples=args.num_examples, steps=args.steps, num_samples=args.num_samples,
                        split=args.split, seed=args.seed, checkpoint=args.checkpoint,
                        device=str(resolve_device(args.device)))
    r = result.report
    print(f"{r['num_examples']} {r['split']} images, {r['mask']} mask ({r['missing_fraction']:.0%} of pixels "
          f"missing), {r['method']}:")
    print(f"{'':24}{'log p(x_m|x_o) / image':>24}{'/ pixel':>10}{'MSE':>9}"
          + (f"{'error':>9}" if "missing_error" in r else ""))
    for name, prefix in (("pyrovae", ""), ("mean-fill baseline", "baseline_")):
        line = (f"{name:24}{r[prefix + 'missing_log_likelihood']:>24.3f}"
                f"{r[prefix + 'missing_log_likelihood_per_pixel']:>10.4f}{r[prefix + 'missing_mse']:>9.4f}")
        if "missing_error" in r:
            line += f"{r[prefix + 'missing_error']:>9.4f}"
        print(line)
    print(f"saved in {result.path} and {result.figure}")
    return 0


def cmd_posterior_check(args):
    from pyrovae.analysis.posterior_check import GUIDE_NAMES, posterior_check

    result = posterior_check(args.run_dir, num_examples=args.num_examples, num_chains=args.num_chains,
                             num_samples=args.num_samples, warmup_steps=args.warmup_steps, fit_steps=args.fit_steps,
                             seed=args.seed, split=args.split, checkpoint=args.checkpoint, progress=None)
    r = result.report
    print(f"NUTS: {r['num_chains']} chains x {r['num_samples']} draws; max R-hat {r['r_hat_max']:.3f}, "
          f"min bulk ESS {r['ess_bulk_min']:.0f}")
    print(f"{'example':>8} {'guide':>12} {'mean error':>11} {'cov error':>10} {'energy dist':>12} {'k-hat':>7}")
    for row in r["examples"]:
        for name in GUIDE_NAMES:
            g = row[name]
            print(f"{row['example']:>8} {name:>12} {g['mean_error']:>11.4f} {g['cov_error']:>10.4f} "
                  f"{g['energy_distance']:>12.4f} {g['khat']:>7.2f}")
    print(f"saved in {result.path}" + (f" and {result.figure}" if result.figure else ""))
    return 0


def cmd_compare_inference(args):
    from pyrovae.analysis.compare_inference import compare_inference

    result = compare_inference(args.run_dir, num_examples=args.num_examples, num_samples=args.num_samples,
                               fit_steps=args.fit_steps, lr=args.lr, split=args.split, seed=args.seed,
                               checkpoint=args.checkpoint, method=args.method, ais_options=ais_options(args))
    r = result.report
    print(f"{r['num_examples']} {r['split']} examples, K = {r['num_samples']}, q* after {r['fit_steps']} steps "
          "(nats per datapoint, mean ± standard error):")
    rows = [("log_likelihood_iwae_q", "log p(x) (IWAE, proposal q)"), ("log_likelihood", "log p(x) (IWAE, proposal q*)")]
    if "log_likelihood_ais" in r:
        a = r["ais"]
        rows.append(("log_likelihood_ais", f"log p(x) (AIS, T = {a['num_steps']}, C = {a['num_chains']})"))
    rows += [("elbo_qstar", "L[q*] per-example"), ("elbo_q", "L[q] amortized"),
             ("approximation_gap", "approximation gap (IWAE)")]
    if "approximation_gap_ais" in r:
        rows.append(("approximation_gap_ais", "approximation gap (AIS)"))
    rows.append(("amortization_gap", "amortization gap"))
    for key, name in rows:
        print(f"  {name:34} {r[key][0]:10.3f} ± {r[key][1]:.3f}")
    if "log_likelihood_ais" in r:
        print(f"  AIS: acceptance {r['ais']['acceptance_mean']:.2f}, Monte Carlo error "
              f"{r['log_likelihood_ais_mc_stderr']:.3f}, {r['ais']['seconds']:.1f} s; IWAE (both proposals) "
              f"{r['iwae_seconds']:.1f} s")
    if r["amortization_gap_closed_at_100_steps"] is not None:
        print(f"  refinement from the encoder closes {r['amortization_gap_closed_at_100_steps']:.0%} of the "
              "amortization gap in 100 steps")
    print(f"{'mode':28}{'seconds':>10}{'parameters':>14}{'peak memory':>14}")
    for mode, cost in r["cost"].items():
        mem = cost.get("peak_memory_bytes")
        secs = cost["seconds"]
        print(f"{mode:28}{'-' if secs is None else f'{secs:.1f}':>10}{cost['parameters']:>14,}"
              f"{'-' if not mem else f'{mem / 2**20:.0f} MiB':>14}")
    print(f"saved in {result.path} and {result.figure}")
    return 0


def cmd_bench(args):
    from pyrovae.analysis.bench import print_table, run_bench

    results = run_bench(steps=args.steps, warmup=args.warmup, repeats=args.repeats, iwae_examples=args.iwae_examples,
                        num_samples=args.num_samples, device=args.device, out=args.json,
                        startup_repeats=args.startup_repeats, digits_epochs=args.digits_epochs,
                        digits_repeats=args.digits_repeats, iwae_repeats=args.iwae_repeats,
                        progress=lambda line: print(line, file=sys.stderr, flush=True))
    print_table(results)
    return 0


def cmd_compare_estimators(args):
    from pyrovae.analysis.compare_estimators import compare_estimators
    from pyrovae.runs.train import resolve_device

    given = {k: getattr(args, k) for k in FRESH_OPTIONS if getattr(args, k) is not None}
    if args.run_dir and given:
        options = ", ".join("--" + k.replace("_", "-") for k in given)
        raise ConfigError(f"{options} {'describes' if len(given) == 1 else 'describe'} a fresh model; drop "
                          f"{'it' if len(given) == 1 else 'them'} to use the run's model, or drop RUN_DIR")
    config = None
    if not args.run_dir:
        config = dataclasses.replace(DEFAULTS, **given)
        if config.data_dir:
            config.data_dir = _absolute(config.data_dir)
    result = compare_estimators(args.run_dir, config, out=args.out, estimators=args.estimators,
                                temperatures=args.temperatures, num_draws=args.num_draws, warmup=args.warmup,
                                batch_size=args.batch_size, split=args.split, seed=args.seed,
                                checkpoint=args.checkpoint, train_seconds=args.train_seconds,
                                device=str(resolve_device(args.device)), overwrite=args.overwrite)
    for line in estimator_lines(result.report):
        print(line)
    print(f"saved in {result.path} and {', '.join(result.figures)}")
    return 0


def cmd_sweep(args):
    from pyrovae.runs.sweep import read_sweep, sweep

    runs = read_sweep(args.file)
    out = args.out or os.path.join("sweeps", os.path.splitext(os.path.basename(args.file))[0])
    result = sweep(runs, out, workers=args.workers)
    failed = {name: s for name, s in result.status.items() if s.startswith("failed")}
    done = sum(s in ("finished", "skipped") for s in result.status.values())
    print(f"sweep {out}: {done} of {len(runs)} runs finished ({sum(s == 'skipped' for s in result.status.values())} "
          f"before this call)" + (f"; {len(failed)} failed" if failed else ""))
    for name, status in failed.items():
        print(f"  {name}: {status}")
    print(f"compare them with: pyrovae compare-runs {out}")
    return 1 if failed else 0


def cmd_compare_runs(args):
    from pyrovae.analysis.compare_runs import find_runs, format_table, group_runs, plot_curves, read_run

    finished, unfinished = find_runs(args.run_dirs)
    if unfinished:
        print(f"pyrovae: warning: {len(unfinished)} unfinished run(s) left out (no summary.json): "
              + ", ".join(os.path.basename(p) for p in unfinished), file=sys.stderr)
    if not finished:
        raise ConfigError("compare-runs: none of the runs has finished (summary.json is written when pyrovae "
                          "train ends)")
    groups = group_runs([read_run(p) for p in finished])
    print(format_table(groups, args.format), end="")
    one = args.run_dirs[0] if len(args.run_dirs) == 1 else None  # a folder of runs, not a run itself
    folder = one if one and not os.path.isfile(os.path.join(one, CONFIG)) else "."
    figure = args.figure or os.path.join(folder, "compare_runs.png")
    print(f"figure: {plot_curves(groups, figure)}", file=sys.stderr)
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "bdmc": cmd_bdmc, "plot": cmd_plot, "impute": cmd_impute,
            "posterior-check": cmd_posterior_check, "compare-inference": cmd_compare_inference, "bench": cmd_bench,
            "compare-estimators": cmd_compare_estimators, "sweep": cmd_sweep, "compare-runs": cmd_compare_runs}


