"""Command line: ``pyrovae train``, ``evaluate``, ``plot``, ``impute`` and ``posterior-check``.

Errors the user can fix print one line, ``pyrovae: error: ...``, and exit with status 2;
a diverged run exits with status 1, an interrupted one with 130.
"""

import argparse
import dataclasses
import json
import os
import shlex
import signal
import sys
import threading
import time
import warnings

from pyrovae.checks import check_float, check_int, check_seed
from pyrovae.config import TrainConfig
from pyrovae.errors import ConfigError, Interrupted, PyrovaeError
from pyrovae.inference.estimators import DEFAULT_TEMPERATURES
from pyrovae.jsonio import dumps
from pyrovae.nets import parse_hidden
from pyrovae.registry import absolute_import_string
from pyrovae.rundir import CONFIG

__all__ = ["main"]

DEFAULTS = TrainConfig()
# the options of compare-estimators that describe a fresh model
FRESH_OPTIONS = ("data", "data_dir", "model", "prior", "likelihood", "guide", "net", "latent_dim", "hidden",
                 "activation", "num_classes", "lr", "split_seed")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors, like every other pyrovae error (exit status 2)."""

    def error(self, message):
        self.exit(2, f"pyrovae: error: {message} (see {self.prog} --help)\n")


def _names(text):
    return [t.strip() for t in text.split(",") if t.strip()]


def _floats(text):
    try:
        return tuple(float(t) for t in _names(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _option_value(text):
    """``16`` -> 16, ``0.5`` -> 0.5, ``true`` -> True, ``16,32`` or ``[16,32]`` -> [16, 32], else the text."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    if "," in text:
        return [_option_value(t.strip()) for t in text.split(",") if t.strip()]
    return text


def _options(text):
    """``KEY=VALUE`` -> {KEY: VALUE} (see :func:`_option_value`)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. num_components=100), got {text!r}")
    return {key.strip(): _option_value(value.strip())}


class _MergeOptions(argparse.Action):
    """``--prior-options a=1 b=2 --prior-options c=3`` -> {"a": 1, "b": 2, "c": 3}."""

    def __call__(self, parser, namespace, values, option_string=None):
        merged = dict(getattr(namespace, self.dest) or {})
        for item in values:
            merged.update(item)
        setattr(namespace, self.dest, merged)


COMPONENTS = ("model", "prior", "likelihood", "guide", "net", "elbo")


def _component_options(opt):
    """``--KIND-options KEY=VALUE ...`` for every component kind."""
    for kind in COMPONENTS:
        opt(f"--{kind}-options", type=_options, nargs="+", action=_MergeOptions, metavar="KEY=VALUE",
            help=f"keyword options of the {kind}'s constructor, e.g. --prior-options num_components=100 "
                 "(values: numbers, true/false, lists as 16,32; checked against the constructor)")


def _number(check, convert=int, **bounds):
    """An argparse type: ``convert`` the text, then ``check`` it (see :mod:`pyrovae.checks`)."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if convert is int else 'a number'}, "
                                             f"got {text!r}") from None
        try:
            return check("the value", value, **bounds)
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return parse


POSITIVE = _number(check_int, minimum=1)
NONNEGATIVE = _number(check_int, minimum=0)
SEED = _number(check_seed)
POSITIVE_FLOAT = _number(check_float, float, low=0, low_open=True)
NONNEGATIVE_FLOAT = _number(check_float, float, low=0)


def _hidden(text):
    try:
        return parse_hidden(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _run_options(p, split=True, seed=True, device=True):
    """The options every command on a saved run shares."""
    if split:
        p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    if seed:
        p.add_argument("--seed", type=SEED, default=0, help="random seed; the same seed gives the same numbers")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"])
    if device:
        p.add_argument("--device", default="cpu")


def _train_parser(sub):
    p = sub.add_parser("train", help="train a model and guide, then evaluate on the test split",
                       description="Train a VAE (Pyro model + guide) with a Pyro ELBO; evaluate log p(x) at the end.")
    # Defaults are None so that --resume can tell the options given on the command line.
    opt = p.add_argument
    d = DEFAULTS
    opt("--data", help=f"digits, binarized-mnist, mnist, fashion-mnist, or a .npy/.npz path (default {d.data})")
    opt("--data-dir", help="folder holding the data files of binarized-mnist, mnist, fashion-mnist")
    plugin = "; or an import string module:Name or path/to/file.py:Name"
    opt("--model", help=f"model name (default {d.model}){plugin}")
    opt("--prior", help=f"prior name (default {d.prior}){plugin}")
    opt("--likelihood", help=f"bernoulli or gaussian (default {d.likelihood}){plugin}")
    opt("--guide", help=f"guide name (default {d.guide}){plugin}")
    opt("--elbo", help=f"trace, meanfield, tracegraph, enum, iwae or relaxed (default {d.elbo}){plugin}")
    opt("--net", help=f"network family of encoder and decoder: mlp or conv (default {d.net}){plugin}")
    _component_options(opt)
    opt("--num-particles", type=int, help=f"samples per datapoint per step, K for iwae (default {d.num_particles})")
    opt("--latent-dim", type=int, help=f"latent dimension D (default {d.latent_dim})")
    opt("--hidden", type=_hidden, help="hidden layer widths of encoder and decoder (default 200,200)")
    opt("--activation", help=f"tanh, relu, elu, softplus, gelu (default {d.activation})")
    opt("--num-classes", type=int,
        help=f"classes of each discrete latent: m2 labels, mixture-vae components, categories (default {d.num_classes})")
    opt("--num-labels", type=int, help=f"m2: class-balanced labelled training examples (default {d.num_labels})")
    opt("--aux-weight", type=float,
        help=f"m2: classification loss weight alpha / N (default {d.aux_weight}, Kingma et al. 2014)")
    opt("--temperature", type=float, help=f"relaxed: initial temperature (default {d.temperature})")
    opt("--temperature-min", type=float, help=f"relaxed: floor of the annealed temperature (default {d.temperature_min})")
    opt("--anneal-rate", type=float, help=f"relaxed: temperature decay per step (default {d.anneal_rate})")
    opt("--straight-through", action="store_const", const=True,
        help="relaxed: one-hot forward values with relaxed gradients")
    opt("--epochs", type=int, help=f"maximum epochs (default {d.epochs})")
    opt("--batch-size", type=int, help=f"minibatch size (default {d.batch_size})")
    opt("--lr", type=float, help=f"Adam learning rate (default {d.lr})")
    opt("--local-lr", type=float, help=f"SparseAdam learning rate of per-example tables (default {d.local_lr})")
    opt("--local-steps", type=int,
        help="per-example guide: K updates of the batch's own parameters per decoder update (default 0: joint)")
    opt("--patience", type=int, help=f"early stopping patience in epochs (default {d.patience})")
    opt("--seed", type=int, help=f"random seed (default {d.seed})")
    opt("--split-seed", type=int, help=f"seed of the train/valid/test split (default {d.split_seed})")
    opt("--device", help="cpu or cuda (default cpu)")
    opt("--jit", action="store_const", const=True,
        help="trace, meanfield: compile the loss with Pyro's JIT ELBO (faster steps; falls back with a warning)")
    opt("--eval-num-samples", type=int,
        help=f"K for the final test log-likelihood; 0 skips it (default {d.eval_num_samples})")
    opt("--out", help="run directory (default runs/DATA-MODEL-GUIDE-ELBO-TIME)")
    opt("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    opt("--overwrite", action="store_true", help="replace an existing run directory --out")
    return p


def _evaluate_parser(sub):
    p = sub.add_parser("evaluate", help="estimate log p(x) (IWAE), the ELBO and active units of a run",
                       description="Per-datapoint IWAE log-likelihood (Burda et al. 2016, eq. 8) of a saved run.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--num-samples", type=POSITIVE, default=5000,
                   help="K importance samples per datapoint (default 5000; PSIS k-hat needs K >= 21)")
    p.add_argument("--batch-size", type=POSITIVE, default=100, help="examples per chunk (default 100)")
    p.add_argument("--inference", default="auto", choices=["auto", "amortized", "refined", "per-example"],
                   help="q for the split: the run's guide (auto), the encoder, the encoder refined for "
                        "--refine-steps, or per-example Gaussians fitted from the prior")
    p.add_argument("--refine-steps", type=NONNEGATIVE, default=100, help="steps of refined / per-example (default 100)")
    _run_options(p)
    return p


def _plot_parser(sub):
    p = sub.add_parser("plot", help="write the run's figures (samples, reconstructions, latent space, ...)",
                       description="Write PNG figures of a run into its directory (see pyrovae.plots).")
    p.add_argument("run_dir", metavar="RUN_DIR")
    _run_options(p, seed=False)
    return p


def _impute_parser(sub):
    from pyrovae.impute import MASKS, METHODS

    p = sub.add_parser("impute", help="hide pixels of test images and fill them from the posterior predictive",
                       description="Missing-pixel imputation against a mean-fill baseline (see pyrovae.impute).")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--mask", default="random", choices=MASKS, help="which pixels to hide (default random)")
    p.add_argument("--missing-fraction", type=_number(check_float, float, low=0, high=1, low_open=True,
                                                      high_open=True), default=0.5,
                   help="share hidden by --mask random (default 0.5)")
    p.add_argument("--method", default="per-example", choices=METHODS,
                   help="per-example: refine from the encoder on the masked ELBO (default); encoder: q as is")
    p.add_argument("--steps", type=NONNEGATIVE, default=200, help="refinement steps of per-example (default 200)")
    p.add_argument("--num-examples", type=POSITIVE, default=1000, help="random images of the split (default 1000)")
    p.add_argument("--num-samples", type=POSITIVE, default=1000, help="importance samples per image (default 1000)")
    _run_options(p)
    return p


def _posterior_check_parser(sub):
    p = sub.add_parser("posterior-check", help="compare guides with a NUTS reference posterior p(z|x)",
                       description="NUTS reference posterior for a few test examples; errors of the amortized, "
                                   "per-example and flow guides (see pyrovae.posterior_check).")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--num-examples", type=POSITIVE, default=4, help="random examples of the split (default 4)")
    p.add_argument("--num-chains", type=POSITIVE, default=4, help="NUTS chains, run one after another (default 4)")
    p.add_argument("--num-samples", type=_number(check_int, minimum=4), default=1000,
                   help="NUTS draws per chain (default 1000)")
    p.add_argument("--warmup-steps", type=NONNEGATIVE, default=500, help="NUTS warm-up steps per chain (default 500)")
    p.add_argument("--fit-steps", type=POSITIVE, default=1000, help="Adam steps fitting each per-example guide")
    _run_options(p, device=False)
    return p


def _compare_inference_parser(sub):
    p = sub.add_parser("compare-inference", help="amortization and approximation gaps (Cremer et al. 2018)",
                       description="Amortized vs per-example inference on a trained run: log p(x), L[q*], L[q], "
                                   "the gaps, refinement curves and cost (see pyrovae.compare_inference).")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--num-examples", type=POSITIVE, default=1000, help="random examples of the split (default 1000)")
    p.add_argument("--num-samples", type=POSITIVE, default=5000, help="K for log p(x) and the ELBOs (default 5000)")
    p.add_argument("--fit-steps", type=POSITIVE, default=1000, help="Adam steps optimizing q* (default 1000)")
    p.add_argument("--lr", type=POSITIVE_FLOAT, default=3e-2,
                   help="Adam learning rate of the per-example fits (default 3e-2)")
    _run_options(p, device=False)
    return p


def _bench_parser(sub):
    p = sub.add_parser("bench", help="training steps and IWAE evaluation against hand-written PyTorch, one run",
                       description="Benchmark against hand-written PyTorch references (see pyrovae.bench).")
    p.add_argument("--steps", type=POSITIVE, default=50, help="steps per timed block (default 50)")
    p.add_argument("--warmup", type=NONNEGATIVE, default=20, help="untimed steps per row first (default 20)")
    p.add_argument("--repeats", type=POSITIVE, default=10,
                   help="timed blocks per row; medians are reported (default 10)")
    p.add_argument("--iwae-examples", type=POSITIVE, help="examples in the IWAE evaluation (default 100 on CPU, "
                   "10,000 on CUDA)")
    p.add_argument("--num-samples", type=POSITIVE, default=5000, help="K of the IWAE evaluation (default 5000)")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    return p


def _compare_estimators_parser(sub):
    p = sub.add_parser("compare-estimators", help="gradient variance, SNR, bias and cost of the ELBO estimators",
                       description="Gradient estimators on a fixed minibatch, parameters frozen: variance, "
                                   "signal-to-noise ratio, bias z-tests, seconds and memory per gradient; "
                                   "optionally equal-time training (see pyrovae.compare_estimators). Give a "
                                   "trained RUN_DIR, or model options for a fresh model at initialization.")
    p.add_argument("run_dir", metavar="RUN_DIR", nargs="?", help="a trained run (omit for a fresh model)")
    p.add_argument("--estimators", type=_names,
                   help="comma-separated: trace, meanfield, score, score+baseline, iwae-5, iwae-50, enum, "
                        "tracegraph, tracegraph+baseline, relaxed-T (default: those for the model's latents)")
    p.add_argument("--temperatures", type=_floats, default=DEFAULT_TEMPERATURES,
                   help="relaxed-T temperatures of the default lineup for discrete latents (default "
                        f"{','.join(f'{t:g}' for t in DEFAULT_TEMPERATURES)})")
    p.add_argument("--num-draws", type=_number(check_int, minimum=2), default=200,
                   help="R gradient draws per estimator (default 200)")
    p.add_argument("--warmup", type=NONNEGATIVE, default=20, help="draws discarded first, for baselines (default 20)")
    p.add_argument("--batch-size", type=POSITIVE, default=100, help="B, the fixed minibatch (default 100)")
    p.add_argument("--train-seconds", type=NONNEGATIVE_FLOAT, default=0.0,
                   help="equal-time training: seconds of steps per estimator (default 0: skip)")
    p.add_argument("--out", help="folder for the report and figures (default RUN_DIR; needed for a fresh model)")
    p.add_argument("--overwrite", action="store_true", help="replace a report already in --out")
    fresh = p.add_argument_group("fresh model (without RUN_DIR)")
    for name in FRESH_OPTIONS:
        field = next(f for f in dataclasses.fields(TrainConfig) if f.name == name)
        kind = _hidden if name == "hidden" else (field.type if field.type in (int, float) else str)
        fresh.add_argument("--" + name.replace("_", "-"), type=kind, help=f"(default {getattr(DEFAULTS, name)})")
    _run_options(p, split=False)
    p.add_argument("--split", default="train", choices=["train", "valid", "test"],
                   help="split of the minibatch (default train)")
    return p


def build_parser():
    parser = _Parser(prog="pyrovae", description="Variational autoencoders as Pyro model/guide pairs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    _train_parser(sub)
    _evaluate_parser(sub)
    _plot_parser(sub)
    _impute_parser(sub)
    _posterior_check_parser(sub)
    _compare_inference_parser(sub)
    _bench_parser(sub)
    _compare_estimators_parser(sub)
    return parser


def _absolute(path):
    return None if path is None else os.path.abspath(path)


def config_from_args(args):
    """The TrainConfig of ``pyrovae train``: defaults (or, for --resume, the saved config)
    updated with the options given on the command line."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if getattr(args, f.name, None) is not None}
    if "data_dir" in given:
        given["data_dir"] = _absolute(given["data_dir"])
    if given.get("data", "").endswith((".npy", ".npz")):
        given["data"] = _absolute(given["data"])
    for kind in COMPONENTS:  # a plugin file is found from any working directory
        if kind in given:
            given[kind] = absolute_import_string(given[kind])
    base = DEFAULTS
    if args.resume:
        if args.out is None:
            raise ConfigError("--resume needs --out, the run directory to continue")
        saved = os.path.join(args.out, CONFIG)
        if os.path.isfile(saved):
            base = TrainConfig.load(saved)
    return dataclasses.replace(base, **given)


def cmd_train(args):
    from pyrovae.distributed import teardown
    from pyrovae.train import train

    config = config_from_args(args)
    stem = os.path.splitext(os.path.basename(config.data))[0]
    out = args.out or os.path.join("runs", f"{stem}-{config.model}-{config.guide}-{config.elbo}-"
                                           f"{time.strftime('%Y%m%d-%H%M%S')}")
    t0 = time.perf_counter()
    try:
        result = train(config, out, resume=args.resume, overwrite=args.overwrite)
    finally:
        teardown()
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
        for line in _label_lines(r, result.baseline):
            print(line)
        print(f"evaluation saved in {result.evaluation.path}")
    if result.figures:
        print("figures: " + ", ".join(os.path.basename(p) for p in result.figures))
    return 0


def _label_lines(report, baseline=None):
    """Human-readable lines for the label metrics of an evaluation report, if any, beside the
    labels-only baseline of a semi-supervised run."""
    if "accuracy" in report:
        yield (f"test accuracy of q(y | x): {report['accuracy']:.1%}" + (
            f"; the same classifier trained on the {baseline['num_labels']} labels alone: "
            f"{baseline['accuracy_labelled_only']:.1%}" if baseline else ""))
    if "clustering_accuracy" in report:
        yield (f"clustering accuracy (best matching of components to labels): {report['clustering_accuracy']:.1%}; "
               f"NMI {report['nmi']:.3f}")


def cmd_evaluate(args):
    from pyrovae.evaluate import evaluate_run
    from pyrovae.train import resolve_device

    device = resolve_device(args.device)
    ev = evaluate_run(args.run_dir, split=args.split, num_samples=args.num_samples, seed=args.seed,
                      checkpoint=args.checkpoint, device=str(device), batch_size=args.batch_size,
                      inference=args.inference, refine_steps=args.refine_steps)
    r = ev.report
    print(dumps(r))
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
    for line in _label_lines(r):
        print(line, file=sys.stderr)
    print(f"saved in {ev.path} and {', '.join(ev.figures)} ({ev.seconds:.1f} s)", file=sys.stderr)
    return 0


def cmd_plot(args):
    from pyrovae.plots import plot_run
    from pyrovae.run import load_run
    from pyrovae.train import resolve_device

    run = load_run(args.run_dir, args.checkpoint, str(resolve_device(args.device)))
    for path in plot_run(args.run_dir, run.model, run.guide, run.data, split=args.split):
        print(path)
    return 0


def cmd_impute(args):
    from pyrovae.impute import impute_run
    from pyrovae.train import resolve_device

    result = impute_run(args.run_dir, mask=args.mask, missing_fraction=args.missing_fraction, method=args.method,
                        num_examples=args.num_examples, steps=args.steps, num_samples=args.num_samples,
                        split=args.split, seed=args.seed, checkpoint=args.checkpoint,
                        device=str(resolve_device(args.device)))
    r = result.report
    print(f"{r['num_examples']} {r['split']} images, {r['mask']} mask ({r['missing_fraction']:.0%} of pixels "
          f"missing), {r['method']}:")
    print(f"{'':24}{'log p(x_m|x_o) / image':>24}{'/ pixel':>10}{'MSE':>9}" + (f"{'error':>9}" if "missing_error" in r else ""))
    for name, prefix in (("pyrovae", ""), ("mean-fill baseline", "baseline_")):
        line = (f"{name:24}{r[prefix + 'missing_log_likelihood']:>24.3f}{r[prefix + 'missing_log_likelihood_per_pixel']:>10.4f}"
                f"{r[prefix + 'missing_mse']:>9.4f}")
        if "missing_error" in r:
            line += f"{r[prefix + 'missing_error']:>9.4f}"
        print(line)
    print(f"saved in {result.path} and {result.figure}")
    return 0


def cmd_posterior_check(args):
    from pyrovae.posterior_check import GUIDE_NAMES, posterior_check

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
    from pyrovae.compare_inference import compare_inference

    result = compare_inference(args.run_dir, num_examples=args.num_examples, num_samples=args.num_samples,
                               fit_steps=args.fit_steps, lr=args.lr, split=args.split, seed=args.seed,
                               checkpoint=args.checkpoint)
    r = result.report
    print(f"{r['num_examples']} {r['split']} examples, K = {r['num_samples']}, q* after {r['fit_steps']} steps "
          "(nats per datapoint, mean ± standard error):")
    for key, name in (("log_likelihood", "log p(x) (IWAE, proposal q*)"), ("elbo_qstar", "L[q*] per-example"),
                      ("elbo_q", "L[q] amortized"), ("approximation_gap", "approximation gap"),
                      ("amortization_gap", "amortization gap")):
        print(f"  {name:30} {r[key][0]:10.3f} ± {r[key][1]:.3f}")
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
    from pyrovae.bench import print_table, run_bench

    results = run_bench(steps=args.steps, warmup=args.warmup, repeats=args.repeats, iwae_examples=args.iwae_examples,
                        num_samples=args.num_samples, device=args.device, out=args.json,
                        progress=lambda line: print(line, file=sys.stderr, flush=True))
    print_table(results)
    return 0


def cmd_compare_estimators(args):
    from pyrovae.compare_estimators import compare_estimators
    from pyrovae.train import resolve_device

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


def estimator_lines(r):
    """The text report of ``pyrovae compare-estimators``."""
    yield (f"{r['model']} ({r['checkpoint']}), {r['num_draws']} gradient draws on a fixed minibatch of "
           f"{r['batch_size']} {r['split']} examples; gradients of the mean negative objective per datapoint")
    first = next(iter(r["estimators"].values()))["groups"]
    yield f"var ratio: variance / variance of {next(iter(first.values()))['variance_reference']}"
    yield (f"{'estimator':22}{'group':>9}{'|mean|':>11}{'variance':>11}{'var ratio':>10}{'SNR':>9}"
           f"{'ms/grad':>9}{'peak MiB':>10}")
    for name, e in r["estimators"].items():
        mem = e["peak_memory_bytes"]
        for j, (group, g) in enumerate(e["groups"].items()):
            cost = (f"{1000 * e['seconds_per_gradient']:>9.2f}{'-' if not mem else f'{mem / 2**20:.0f}':>10}"
                    if j == 0 else "")
            ratio = "-" if g["variance_ratio"] is None else f"{g['variance_ratio']:.3g}"
            snr = "inf" if g["snr"] is None else f"{g['snr']:.3g}"
            yield (f"{name if j == 0 else '':22}{group:>9}{g['mean_norm']:>11.3g}{g['variance']:>11.3g}"
                   f"{ratio:>10}{snr:>9}" + cost)
    for name, why in r["skipped"].items():
        yield f"{name}: not applicable ({why})"
    if r["bias_checks"]:
        yield f"bias check: z-tests of mean gradients against the reference, projected on its mean and on a " \
              f"random direction; agreement when |z| < {r['z_critical']}"
    for c in r["bias_checks"]:
        verdict = "agrees" if c["agrees"] else "DIFFERS"
        line = (f"  {c['estimator']:20} vs {c['reference']:10}{c['group']:>9}  z = {c['z_signal']:+7.2f}, "
                f"{c['z_random']:+7.2f}  {verdict}")
        if "relative_bias" in c and c["relative_bias"] is not None:
            line += f"; bias {c['relative_bias']:.1%} of |mean|"
        yield line
    for name, curve in r.get("training", {}).get("curves", {}).items():
        yield (f"equal-time training, {r['training']['budget_seconds']:g} s: {name:20} {curve['steps']:>7} steps, "
               f"validation ELBO {curve['valid_elbo'][-1]:.3f}" + (" (diverged)" if curve["diverged"] else ""))


COMMANDS = {"bench": cmd_bench, "compare-estimators": cmd_compare_estimators, "train": cmd_train, "evaluate": cmd_evaluate, "plot": cmd_plot, "impute": cmd_impute,
            "posterior-check": cmd_posterior_check, "compare-inference": cmd_compare_inference}


def _interrupted(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"pyrovae: warning: {message}", file=sys.stderr if file is None else file)


def main(argv=None):
    """Run one command; returns the exit status (0, 1 for a diverged run, 2 for an error the user
    can fix, 130 after SIGINT or SIGTERM)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, or a usage error argparse printed
        return done.code
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():  # SIGTERM, like Ctrl-C, says what was kept
        signal.signal(signal.SIGTERM, _interrupted)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            return COMMANDS[args.command](args)
    except Interrupted as err:
        print(f"pyrovae: {err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt as err:
        name = str(err) or "SIGINT"
        print(f"pyrovae: {name}: {args.command} stopped; its files are written whole or not at all, so nothing "
              f"half-written was kept; run it again with: pyrovae {shlex.join(argv)}", file=sys.stderr)
        return 130
    except OSError as err:  # outside a run directory's own handling: still one line, naming the path
        print(f"pyrovae: error: {err.strerror or err}" + (f": {err.filename}" if err.filename else ""), file=sys.stderr)
        return 2
    except PyrovaeError as err:
        from pyrovae.train import TrainingDiverged

        print(f"pyrovae: error: {err}", file=sys.stderr)
        return 1 if isinstance(err, TrainingDiverged) else 2
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)
