"""The argument parser of every ``pyrovae`` command; ``train``'s options (and the fresh-model
options of ``compare-estimators``) are generated from :class:`~pyrovae.config.TrainConfig`'s fields."""

import argparse

from pyrovae.checks import check_float, check_int
from pyrovae.cli.options import (
    NONNEGATIVE,
    NONNEGATIVE_FLOAT,
    POSITIVE,
    POSITIVE_FLOAT,
    add_ais_options,
    add_config_options,
    floats,
    names,
    number,
    run_options,
)

__all__ = ["build_parser", "FRESH_OPTIONS"]

# the options of compare-estimators that describe a fresh model
FRESH_OPTIONS = ("data", "data_dir", "model", "prior", "likelihood", "guide", "net", "latent_dim", "hidden",
                 "activation", "num_classes", "lr", "split_seed")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors, like every other pyrovae error (exit status 2)."""

    def error(self, message):
        self.exit(2, f"pyrovae: error: {message} (see {self.prog} --help)\n")


def _numbers(parser, command):
    """The :data:`NUMBERS` of ``command`` as options, each help ending with its default."""
    for name, flag, kind, default, help in NUMBERS:
        if name == command:
            parser.add_argument(flag, type=kind, default=default, help=f"{help} (default {default:g})")


# commands on a saved run that take only numbers: name -> help, description, run_options keywords
ANALYSES = {
    "posterior-check": ("compare guides with a NUTS reference posterior p(z|x)",
                        "NUTS reference posterior for a few test examples; errors of the amortized, per-example and "
                        "flow guides (see pyrovae.analysis.posterior_check).", {"device": False}),
    "compare-inference": ("amortization and approximation gaps (Cremer et al. 2018)",
                          "Amortized vs per-example inference on a trained run: log p(x), L[q*], L[q], the gaps, "
                          "refinement curves and cost (see pyrovae.analysis.compare_inference).", {"device": False}),
}
# the numeric options of each command: (command, flag, type, default, help)
NUMBERS = [
    ("posterior-check", "--num-examples", POSITIVE, 4, "random examples of the split"),
    ("posterior-check", "--num-chains", POSITIVE, 4, "NUTS chains, run one after another"),
    ("posterior-check", "--num-samples", number(check_int, minimum=4), 1000, "NUTS draws per chain"),
    ("posterior-check", "--warmup-steps", NONNEGATIVE, 500, "NUTS warm-up steps per chain"),
    ("posterior-check", "--fit-steps", POSITIVE, 1000, "Adam steps fitting each per-example guide"),
    ("compare-inference", "--num-examples", POSITIVE, 1000, "random examples of the split"),
    ("compare-inference", "--num-samples", POSITIVE, 5000, "K for log p(x) and the ELBOs"),
    ("compare-inference", "--fit-steps", POSITIVE, 1000, "Adam steps optimizing q*"),
    ("compare-inference", "--lr", POSITIVE_FLOAT, 3e-2, "Adam learning rate of the per-example fits"),
    ("bdmc", "--num-examples", POSITIVE, 100, "examples simulated from the model"),
    ("bdmc", "--num-samples", POSITIVE, 5000, "K of the IWAE estimate on the simulated data"),
    ("evaluate", "--num-samples", POSITIVE, 5000, "K importance samples per datapoint; PSIS k-hat needs K >= 21"),
    ("evaluate", "--batch-size", POSITIVE, 100, "examples per chunk"),
    ("evaluate", "--refine-steps", NONNEGATIVE, 100, "steps of refined / per-example"),
    ("impute", "--missing-fraction", number(check_float, float, low=0, high=1, low_open=True, high_open=True), 0.5,
     "share hidden by --mask random"),
    ("impute", "--steps", NONNEGATIVE, 200, "refinement steps of per-example"),
    ("impute", "--num-examples", POSITIVE, 1000, "random images of the split"),
    ("impute", "--num-samples", POSITIVE, 1000, "importance samples per image"),
    ("bench", "--steps", POSITIVE, 50, "steps per timed block"),
    ("bench", "--warmup", NONNEGATIVE, 20, "untimed steps per row first"),
    ("bench", "--repeats", POSITIVE, 10, "timed blocks per row; medians are reported"),
    ("bench", "--num-samples", POSITIVE, 5000, "K of the IWAE evaluation"),
    ("bench", "--digits-epochs", number(check_int, minimum=2), 8, "epochs per run of the digits-epoch rows (the "
     "first is not timed)"),
    ("bench", "--digits-repeats", NONNEGATIVE, 5, "rounds of the digits-epoch rows (0 skips)"),
    ("bench", "--iwae-repeats", POSITIVE, 3, "rounds of the IWAE evaluation rows"),
    ("bench", "--startup-repeats", NONNEGATIVE, 5, "rounds of the command-line start-up rows, against import torch, "
     "pyro (0 skips)"),
]


def _analysis_parsers(sub):
    for name, (help, description, keywords) in ANALYSES.items():
        p = sub.add_parser(name, help=help, description=description)
        p.add_argument("run_dir", metavar="RUN_DIR")
        _numbers(p, name)
        if name == "compare-inference":
            p.add_argument("--method", default="iwae", choices=["iwae", "ais"],
                           help="log p(x) by IWAE with proposal q* (default), or also by AIS from the encoder's q")
            add_ais_options(p)
        run_options(p, **keywords)


def _train_parser(sub):
    p = sub.add_parser("train", help="train a model and guide, then evaluate on the test split",
                       description="Train a VAE (Pyro model + guide) with a Pyro ELBO; evaluate log p(x) at the end.")
    add_config_options(p)  # every TrainConfig field; defaults None, so --resume can tell the options given
    opt = p.add_argument
    opt("--config", metavar="FILE", help="options from a TOML or JSON file (a run's config.json reruns it); "
                                         "options given here override the file's")
    opt("--out", help="run directory (default runs/DATA-MODEL-GUIDE-ELBO-TIME)")
    opt("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    opt("--overwrite", action="store_true", help="replace an existing run directory --out")
    return p


def _evaluate_parser(sub):
    p = sub.add_parser("evaluate", help="estimate log p(x) (IWAE or AIS), the ELBO and active units of a run",
                       description="Per-datapoint IWAE log-likelihood (Burda et al. 2016, eq. 8) of a saved run, "
                                   "or annealed importance sampling with HMC (--method ais).")
    p.add_argument("run_dir", metavar="RUN_DIR")
    _numbers(p, "evaluate")
    p.add_argument("--num-examples", type=POSITIVE,
                   help="evaluate this many random examples of the split (default: all, in order)")
    p.add_argument("--inference", default="auto", choices=["auto", "amortized", "refined", "per-example"],
                   help="q for the split: the run's guide (auto), the encoder, the encoder refined for "
                        "--refine-steps, or per-example Gaussians fitted from the prior")
    p.add_argument("--method", default="iwae", choices=["iwae", "ais"],
                   help="log p(x) by IWAE with K = --num-samples (default), or by AIS (also reports IWAE)")
    add_ais_options(p)
    run_options(p)
    return p


def _bdmc_parser(sub):
    p = sub.add_parser("bdmc", help="bidirectional Monte Carlo: AIS lower and upper bounds of log p(x) on simulated data",
                       description="Simulate (z, x) from the trained model; forward AIS (lower bound) and reverse AIS "
                                   "from z (upper bound) of log p(x), and IWAE on the same data "
                                   "(Grosse et al. 2015; see pyrovae.analysis.bdmc).")
    p.add_argument("run_dir", metavar="RUN_DIR")
    _numbers(p, "bdmc")
    add_ais_options(p)
    run_options(p, split=False)
    return p


def _plot_parser(sub):
    p = sub.add_parser("plot", help="write the run's figures (samples, reconstructions, latent space, ...)",
                       description="Write PNG figures of a run into its directory (see pyrovae.analysis.plots).")
    p.add_argument("run_dir", metavar="RUN_DIR")
    run_options(p, seed=False)
    return p


def _impute_parser(sub):
    from pyrovae.analysis.impute import MASKS, METHODS

    p = sub.add_parser("impute", help="hide pixels of test images and fill them from the posterior predictive",
                       description="Missing-pixel imputation against a mean-fill baseline "
                                   "(see pyrovae.analysis.impute).")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--mask", default="random", choices=MASKS, help="which pixels to hide (default random)")
    p.add_argument("--method", default="per-example", choices=METHODS,
                   help="per-example: refine from the encoder on the masked ELBO (default); encoder: q as is")
    _numbers(p, "impute")
    run_options(p)
    return p


def _bench_parser(sub):
    p = sub.add_parser("bench", help="training steps and IWAE evaluation against hand-written PyTorch, one run",
                       description="Benchmark against hand-written PyTorch references (see pyrovae.analysis.bench).")
    _numbers(p, "bench")
    p.add_argument("--iwae-examples", type=POSITIVE, help="examples in the IWAE evaluation (default 100 on CPU, "
                   "10,000 on CUDA)")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    return p


def _compare_estimators_parser(sub):
    from pyrovae.inference.estimators import DEFAULT_TEMPERATURES

    p = sub.add_parser("compare-estimators", help="gradient variance, SNR, bias and cost of the ELBO estimators",
                       description="Gradient estimators on a fixed minibatch, parameters frozen: variance, "
                                   "signal-to-noise ratio, bias z-tests, seconds and memory per gradient; "
                                   "optionally equal-time training (see pyrovae.analysis.compare_estimators). Give a "
                                   "trained RUN_DIR, or model options for a fresh model at initialization.")
    p.add_argument("run_dir", metavar="RUN_DIR", nargs="?", help="a trained run (omit for a fresh model)")
    p.add_argument("--estimators", type=names,
                   help="comma-separated: trace, meanfield, score, score+baseline, iwae-5, iwae-50, enum, "
                        "tracegraph, tracegraph+baseline, relaxed-T (default: those for the model's latents)")
    p.add_argument("--temperatures", type=floats, default=DEFAULT_TEMPERATURES,
                   help="relaxed-T temperatures of the default lineup for discrete latents (default "
                        f"{','.join(f'{t:g}' for t in DEFAULT_TEMPERATURES)})")
    p.add_argument("--num-draws", type=number(check_int, minimum=2), default=200,
                   help="R gradient draws per estimator (default 200)")
    p.add_argument("--warmup", type=NONNEGATIVE, default=20, help="draws discarded first, for baselines (default 20)")
    p.add_argument("--batch-size", type=POSITIVE, default=100, help="B, the fixed minibatch (default 100)")
    p.add_argument("--train-seconds", type=NONNEGATIVE_FLOAT, default=0.0,
                   help="equal-time training: seconds of steps per estimator (default 0: skip)")
    p.add_argument("--out", help="folder for the report and figures (default RUN_DIR; needed for a fresh model)")
    p.add_argument("--overwrite", action="store_true", help="replace a report already in --out")
    fresh = p.add_argument_group("fresh model (without RUN_DIR)")
    add_config_options(fresh, FRESH_OPTIONS)
    run_options(p, split=False)
    p.add_argument("--split", default="train", choices=["train", "valid", "test"],
                   help="split of the minibatch (default train)")
    return p


def _sweep_parsers(sub):
    p = sub.add_parser("sweep", help="train a grid of options x seeds from one file; resumable",
                       description="Train every run of a sweep file (options, then a [sweep] table of seeds, "
                                   "variants and grid) into OUT/NAME; finished runs are skipped and started ones "
                                   "continued, so the same command resumes an interrupted sweep "
                                   "(see pyrovae.runs.sweep).")
    p.add_argument("file", metavar="FILE", help="a TOML or JSON sweep file")
    p.add_argument("--out", help="the sweep's folder (default sweeps/FILE-NAME)")
    p.add_argument("--workers", type=POSITIVE, default=1, help="runs at a time, each in its own process "
                   "(default 1: one after another, in this process)")
    p = sub.add_parser("compare-runs", help="a table of finished runs grouped by settings, mean ± sd over seeds",
                       description="Finished runs (or a sweep's folder) in one table: test log-likelihood, ELBO, "
                                   "active units, k-hat share, parameters and training time, mean ± sd over the "
                                   "runs of each group; and a figure of the validation curves "
                                   "(see pyrovae.analysis.compare_runs).")
    p.add_argument("run_dirs", metavar="DIR", nargs="+", help="run directories, or folders of runs")
    p.add_argument("--format", default="text", choices=["text", "markdown", "csv"], help="table format (default text)")
    p.add_argument("--figure", help="the curves figure (default DIR/compare_runs.png for one folder of runs, "
                                    "else ./compare_runs.png)")


def build_parser():
    parser = _Parser(prog="pyrovae", description="Variational autoencoders as Pyro model/guide pairs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for add in (_train_parser, _evaluate_parser, _bdmc_parser, _plot_parser, _impute_parser, _analysis_parsers, _bench_parser,
                _compare_estimators_parser, _sweep_parsers):
        add(sub)
    return parser
