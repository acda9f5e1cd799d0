r"""``pyrovae bdmc``: bidirectional Monte Carlo on data simulated from a trained model.

Grosse, Ghahramani & Adams (2015, "Sandwiching the marginal likelihood using bidirectional
Monte Carlo", arXiv:1511.02543, section 4): draw N pairs (z_n, x_n) ~ p(z) p(x|z) from the
model; z_n is then an exact sample of p(z | x_n). Per datapoint, in nats:

* ``lower``: forward AIS (:func:`pyrovae.inference.ais.ais`), a stochastic lower bound of
  log p(x_n);
* ``upper``: reverse AIS from z_n (:func:`pyrovae.inference.ais.reverse_ais`), a stochastic
  upper bound;
* ``gap`` = upper - lower: on this data, the error of either estimate is at most the gap (in
  expectation), so a small gap certifies AIS with these settings (Wu et al. 2017,
  arXiv:1611.04273, section 4 use it to validate their AIS on VAEs);
* ``iwae``: the IWAE estimate (K = ``num_samples``, the guide as proposal) on the same data,
  with PSIS k-hat, to see how far below the bounds it falls.

Each is averaged over the N examples, with its standard error over examples; the gap's is
over the paired per-example differences. The figure shows each example's bounds and IWAE
estimate.
"""

import dataclasses
import os
from typing import NamedTuple

import torch

from pyrovae.analysis.ais_options import AISOptions
from pyrovae.analysis.summary import mean_stderr
from pyrovae.errors import ConfigError
from pyrovae.figure import subplots
from pyrovae.inference.ais import ais, reverse_ais
from pyrovae.inference.marginal import iwae
from pyrovae.jsonio import write_json
from pyrovae.runs.load import load_run

__all__ = ["BDMC", "bdmc", "bdmc_run", "simulate"]


class BDMC(NamedTuple):
    report: dict  #: the numbers (see the module doc), nats per datapoint
    lower: torch.Tensor  #: forward AIS per simulated example, (N,)
    upper: torch.Tensor  #: reverse AIS per simulated example, (N,)
    iwae: torch.Tensor  #: IWAE per simulated example, (N,)
    x: torch.Tensor  #: the simulated data, (N, P)
    path: str | None = None  #: the JSON file written (by :func:`bdmc_run`)
    figure: str | None = None  #: the PNG written (by :func:`bdmc_run`)


@torch.no_grad()
def simulate(model, num_examples):
    """``(x, z)``: ``num_examples`` draws from p(x, z) by ancestral sampling; x (N, P) and z a dict
    latent site -> (N, D) (discrete sites the model enumerates are drawn and dropped). The
    global RNG supplies the draws."""
    from pyro import poutine

    with poutine.block():
        trace = poutine.trace(model).get_trace(None, num_data=num_examples)
    return trace.nodes["x"]["value"], {name: trace.nodes[name]["value"] for name in model.latent_sites}


def bdmc(model, guide, num_examples=100, num_samples=5000, seed=0, options=None, batch_size=100, progress=None):
    """Bidirectional Monte Carlo of ``model`` on ``num_examples`` examples it simulates; see the
    module doc. Writes nothing.

    :param guide: the guide; forward and reverse AIS start from its q(z|x) with
        ``options.start = "guide"``, and IWAE uses it as the proposal.
    :param int num_samples: K of the IWAE estimate.
    :param int seed: seeds the simulation and every chain.
    :param options: an :class:`~pyrovae.analysis.ais_options.AISOptions` (defaults if None).
    :returns: a :class:`BDMC`.
    :raises ConfigError: for a model AIS cannot anneal, a per-example guide with ``start="guide"``,
        or a bad option.
    """
    options = (options or AISOptions()).check()
    if num_examples < 1 or num_samples < 1:
        raise ConfigError(f"need --num-examples >= 1 and --num-samples >= 1, got {num_examples} and {num_samples}")
    if options.start == "guide" and getattr(guide, "local_tables", ()):
        raise ConfigError("bdmc simulates new data, for which a per-example guide has no q(z|x); use --ais-start prior")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        x, z = simulate(model, num_examples)
        lower = ais(model, guide, x, options, batch_size, progress=progress)
        upper = reverse_ais(model, guide, x, z, options, batch_size, progress=progress)
        iw = iwae(model, guide, x, num_samples, batch_size, psis=True, progress=progress)
    gap = upper.log_likelihood - lower.log_likelihood
    report = {
        "num_examples": num_examples, "num_samples": num_samples, "seed": seed, "ais": {
            **dataclasses.asdict(options), "acceptance_forward": float(lower.acceptance.mean()),
            "acceptance_reverse": float(upper.acceptance.mean())},
        "lower": mean_stderr(lower.log_likelihood), "upper": mean_stderr(upper.log_likelihood), "gap": mean_stderr(gap),
        "gap_max": float(gap.max()), "iwae": mean_stderr(iw.log_likelihood),
        "iwae_below_lower": mean_stderr(lower.log_likelihood - iw.log_likelihood),
        "khat_share_above_0.7": float((iw.khat > 0.7).double().mean()) if iw.khat is not None else None,
        "units": "nats per datapoint; each pair is (mean, standard error)",
    }
    return BDMC(report, lower.log_likelihood, upper.log_likelihood, iw.log_likelihood, x)


def bdmc_run(run_dir, num_examples=100, num_samples=5000, seed=0, checkpoint="best", options=None, device="cpu",
             progress=None):
    """:func:`bdmc` on a run directory's checkpoint; writes ``bdmc_{checkpoint}_{tag}.json`` and
    ``.png`` there (tag: ``n100_ais_T1000_C4``, with ``_seed{s}`` when the seed is not 0).

    :raises CheckpointError, ConfigError: for a bad run directory or option.
    """
    options = (options or AISOptions()).check()
    _, model, guide, state, _ = load_run(run_dir, checkpoint, device)
    result = bdmc(model, guide, num_examples, num_samples, seed, options, progress=progress)
    report = {**result.report, "checkpoint": checkpoint, "epoch": state["epoch"]}
    stem = os.path.join(run_dir, f"bdmc_{checkpoint}_n{num_examples}_{options.tag()}" + (f"_seed{seed}" if seed else ""))
    write_json(stem + ".json", report)
    _figure(stem + ".png", result)
    return result._replace(report=report, path=stem + ".json", figure=stem + ".png")


def _figure(path, result):
    order = torch.argsort(result.lower)
    fig, ax = subplots(1, 1, figsize=(7, 3.6))
    n = torch.arange(len(order))
    ax.fill_between(n, result.lower[order], result.upper[order], color="tab:blue", alpha=0.3,
                    label="between the bounds")
    ax.plot(n, result.lower[order], color="tab:blue", linewidth=1, label="forward AIS (lower bound)")
    ax.plot(n, result.upper[order], color="tab:red", linewidth=1, label="reverse AIS (upper bound)")
    ax.plot(n, result.iwae[order], ".", color="0.3", markersize=3, label="IWAE")
    r = result.report
    ax.set_title(f"BDMC on {r['num_examples']} simulated examples, T = {r['ais']['num_steps']}, "
                 f"C = {r['ais']['num_chains']}: gap {r['gap'][0]:.3f} nats", fontsize=9)
    ax.set_xlabel("simulated example (sorted by the lower bound)")
    ax.set_ylabel("log p(x), nats")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=100, bbox_inches="tight")
