r"""Gradient estimators of the ELBO, as variants of Pyro's ELBO classes, for comparing them.

An estimator is a Pyro ELBO (see :mod:`.elbos`) plus how the guide's sites are treated:

======================  ====================  ==============================================================
name                    ELBO                  gradient of the guide's sites
======================  ====================  ==============================================================
trace                   ``Trace_ELBO``        reparameterization (Kingma & Welling 2014)
meanfield               ``TraceMeanField``    reparameterization, analytic KL terms
score                   ``TraceGraph_ELBO``   score function on every site (``has_rsample_(False)``), no
                                              baseline (Williams 1992; Ranganath et al. 2014)
score+baseline          ``TraceGraph_ELBO``   score function with a decaying-average baseline where the
                                              guide declares none
iwae-5, iwae-50         ``RenyiELBO(0)``      reparameterization of the IWAE bound with K = 5, 50
                                              (Burda et al. 2016, eq. 8) - a different objective
enum                    ``TraceEnum_ELBO``    exact sums over the discrete sites
tracegraph              ``TraceGraph_ELBO``   score function on discrete sites, baselines removed
tracegraph+baseline     ``TraceGraph_ELBO``   score function with the guide's own NVIL baselines
relaxed-T               relaxed ``Trace``     Gumbel-softmax at a fixed temperature T (biased)
======================  ====================  ==============================================================

Estimators with the same ``objective`` estimate the gradient of the same function, so their
means must agree (``relaxed-T`` estimates the gradient of a relaxed objective, and is compared
with the exact ELBO's gradient to measure its bias).
"""

import dataclasses
from dataclasses import dataclass

from pyro.poutine.messenger import Messenger

from pyrovae.errors import ConfigError, UnknownNameError
from pyrovae.inference.guides.baselines import DECAY
from pyrovae.registry import lookup

__all__ = ["Estimator", "ESTIMATORS", "LINEUPS", "DEFAULT_TEMPERATURES", "estimator", "lineup", "ScoreFunction",
           "Baselines"]

DEFAULT_TEMPERATURES = (2.0, 1.0, 0.5, 0.1)


@dataclass(frozen=True)
class Estimator:
    """One gradient estimator.

    :param str elbo: a key of :data:`~.elbos.ELBOS`.
    :param int num_particles: samples per datapoint (K of ``iwae``).
    :param bool score_function: force score-function gradients on every guide site.
    :param str baselines: ``"guide"`` (as the guide declares them), ``"none"`` (removed) or
        ``"average"`` (a decaying average added to sites that have none).
    :param float temperature: the fixed temperature of ``relaxed``.
    :param str objective: what the estimator's mean is the gradient of.
    """

    elbo: str
    num_particles: int = 1
    score_function: bool = False
    baselines: str = "guide"
    temperature: float = None
    objective: str = "elbo"

    def configure(self, config):
        """``config`` (a :class:`~pyrovae.config.TrainConfig`) with this estimator's ELBO, particles and
        (for ``relaxed``) a constant temperature, for :func:`pyrovae.build.build_elbo`."""
        changes = dict(elbo=self.elbo, num_particles=self.num_particles)
        if self.elbo == "relaxed":
            changes.update(temperature=self.temperature, temperature_min=self.temperature, anneal_rate=0.0)
        return dataclasses.replace(config, **changes)

    def wrap_guide(self, guide):
        """``guide`` under the messengers this estimator needs (unchanged when none)."""
        if self.baselines != "guide":
            guide = Baselines(self.baselines)(guide)
        if self.score_function:
            guide = ScoreFunction()(guide)
        return guide


# name -> estimator; relaxed-T entries are made by :func:`estimator` for any temperature T
ESTIMATORS = {
    "trace": Estimator("trace"),
    "meanfield": Estimator("meanfield"),
    "score": Estimator("tracegraph", score_function=True, baselines="none"),
    "score+baseline": Estimator("tracegraph", score_function=True, baselines="average"),
    "iwae-5": Estimator("iwae", num_particles=5, objective="iwae-5"),
    "iwae-50": Estimator("iwae", num_particles=50, objective="iwae-50"),
    "stl": Estimator("stl"),
    "iwae-dreg-5": Estimator("iwae-dreg", num_particles=5, objective="iwae-5"),
    "iwae-dreg-50": Estimator("iwae-dreg", num_particles=50, objective="iwae-50"),
    "iwae-stl-5": Estimator("iwae-stl", num_particles=5, objective="iwae-5"),
    "vimco-5": Estimator("vimco", num_particles=5, objective="iwae-5"),
    "enum": Estimator("enum"),
    "tracegraph": Estimator("tracegraph", baselines="none"),
    "tracegraph+baseline": Estimator("tracegraph"),
}

# the default comparison for models with continuous latents only, and with discrete latents;
# the first entry is the reference of the bias check
LINEUPS = {
    "continuous": ("trace", "meanfield", "stl", "score", "score+baseline", "iwae-5", "iwae-dreg-5", "iwae-stl-5",
                   "iwae-50", "iwae-dreg-50"),
    "discrete": ("enum", "tracegraph", "tracegraph+baseline", "vimco-5"),  # and relaxed-T for each temperature
}


def estimator(name):
    """The estimator called ``name``: a key of :data:`ESTIMATORS`, or ``relaxed-T`` with T > 0.

    :raises UnknownNameError: for an unknown name.
    :raises ConfigError: for a relaxed temperature that is not a positive number.
    """
    if name.startswith("relaxed-"):
        try:
            temperature = float(name[len("relaxed-"):])
        except ValueError:
            temperature = float("nan")
        if not temperature > 0:
            raise ConfigError(f"{name!r}: the relaxed estimator is written relaxed-T with a temperature T > 0, "
                              "e.g. relaxed-0.5")
        return Estimator("relaxed", temperature=temperature, objective=f"relaxed-{temperature:g}")
    try:
        return lookup(ESTIMATORS, name, "gradient estimator")
    except UnknownNameError as err:
        raise UnknownNameError(f"{err.args[0]}, relaxed-T (T > 0, e.g. relaxed-0.5)") from None


def lineup(model, temperatures=DEFAULT_TEMPERATURES):
    """The default estimator names for ``model``: :data:`LINEUPS` by whether it has discrete latents."""
    if getattr(model, "discrete_sites", ()):
        return (*LINEUPS["discrete"], *(f"relaxed-{t:g}" for t in temperatures))
    return LINEUPS["continuous"]


def _detach_sampling(fn):
    """Make ``fn`` sample without a pathwise gradient (through ``Independent`` and other wrappers)."""
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    fn.has_rsample_(False)


class ScoreFunction(Messenger):
    """Make every unobserved reparameterizable site sample with ``has_rsample_(False)``, so Pyro's
    ELBOs use the score-function (REINFORCE) gradient there."""

    def _pyro_sample(self, msg):
        if not msg["is_observed"] and getattr(msg["fn"], "has_rsample", False):
            _detach_sampling(msg["fn"])


class Baselines(Messenger):
    """Remove (``"none"``) or add (``"average"``: Pyro's decaying average, beta = 0.9) the
    ``infer["baseline"]`` entry of unobserved sites, which ``TraceGraph_ELBO`` reads."""

    def __init__(self, mode):
        if mode not in ("none", "average"):
            raise ValueError(f"baselines must be 'none' or 'average', got {mode!r}")
        super().__init__()
        self.mode = mode

    def _pyro_sample(self, msg):
        if msg["is_observed"]:
            return
        infer = dict(msg["infer"])
        if self.mode == "none":
            infer.pop("baseline", None)
        else:
            infer.setdefault("baseline", {"use_decaying_avg_baseline": True, "baseline_beta": DECAY})
        msg["infer"] = infer
