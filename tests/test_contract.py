"""Every registered guide x ELBO x prior x likelihood: one training step, finite loss, right shapes.

A new entry in any registry table is covered here without a new test.
"""

import math

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyrovae.inference.elbos import ELBOS, loss_and_grads
from pyrovae.inference.guides import guides_for
from pyrovae.inference.kl import ANALYTIC, ENUMERATED, MONTE_CARLO, kl_terms
from pyrovae.inference.marginal import iwae
from pyrovae.models import LIKELIHOODS, MODELS, PRIORS

from pyrovae.build import build_elbo, build_model_and_guide
from pyrovae.config import TrainConfig
from pyrovae.errors import ConfigError, UnknownNameError
from pyrovae.training.optim import make_optimizers

P, D, N, B = 16, 3, 30, 6


def _data(likelihood):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(N, P, generator=gen)
    return torch.bernoulli(x, generator=gen) if LIKELIHOODS[likelihood].binary else x


MULTI_SAMPLE = ("iwae", "iwae-dreg", "iwae-stl", "vimco")  # bounds over K >= 2 particles
PATH_DERIVATIVE = ("stl", "iwae-dreg", "iwae-stl")  # hold q's parameters fixed: no discrete sites, no flows
FLOW_GUIDES = ("iaf",)  # q's parameters live in its transforms


def _setup(model, guide, elbo, prior, likelihood):
    num_particles = 3 if elbo in MULTI_SAMPLE else 1
    config = TrainConfig(model=model, guide=guide, elbo=elbo, prior=prior, likelihood=likelihood,
                         latent_dim=D, hidden=(8,), num_particles=num_particles)
    return config, *build_model_and_guide(config, P, N)


def _cases():
    """model x (its guides) x ELBO x prior (only the default for models owning theirs) x likelihood."""
    for model, cls in sorted(MODELS.items()):
        priors = ["standard-normal"] if getattr(cls, "owns_prior", False) else sorted(PRIORS)
        for guide in sorted(guides_for(model)):
            for elbo in sorted(ELBOS):
                for prior in priors:
                    for likelihood in sorted(LIKELIHOODS):
                        yield model, guide, elbo, prior, likelihood


# The estimators each model must accept, written out by hand (every other one must be refused
# with a ConfigError naming --elbo): enum needs an enumerable discrete site, mixture-vae's ELBO
# needs enum, hvae's guide is not mean-field, and meanfield, iwae and the path-derivative
# estimators have no gradient for discrete guide sites. A new model needs a row here.
USABLE = {
    "vae": {"trace", "meanfield", "tracegraph", "iwae", "relaxed", "stl", "iwae-dreg", "iwae-stl", "vimco"},
    "hvae": {"trace", "tracegraph", "iwae", "relaxed", "stl", "iwae-dreg", "iwae-stl", "vimco"},
    "bernoulli-vae": {"trace", "tracegraph", "relaxed", "vimco"},
    "categorical-vae": {"trace", "tracegraph", "enum", "relaxed", "vimco"},
    "m2": {"trace", "tracegraph", "enum", "relaxed", "vimco"},
    "mixture-vae": {"enum"},
}


def test_every_model_has_a_row_of_usable_estimators_and_all_but_enum_only_models_two_or_more():
    assert set(USABLE) == set(MODELS), "add the new model's usable estimators to USABLE"
    for name, usable in USABLE.items():
        assert usable <= set(ELBOS), name
        requires_enum = getattr(MODELS[name], "requires_enum", False)
        assert len(usable) >= (1 if requires_enum else 2), (name, usable)


def test_guides_of_other_models_are_refused_by_name():
    with pytest.raises(UnknownNameError, match="guide for model 'm2'.*amortized"):
        build_model_and_guide(TrainConfig(model="m2", guide="per-example", latent_dim=2), P, N)
    with pytest.raises(ConfigError, match="own prior"):
        build_model_and_guide(TrainConfig(model="bernoulli-vae", prior="mixture", latent_dim=2), P, N)


def _needs_missing_encoder(model, guide, prior):
    """Priors made from the encoder (``attach``) refuse guides without one."""
    return hasattr(PRIORS[prior], "attach") and not hasattr(guides_for(model)[guide], "encode")


@pytest.mark.parametrize("model, guide, elbo, prior, likelihood", list(_cases()))
def test_one_training_step(model, guide, elbo, prior, likelihood):
    torch.manual_seed(0)
    if _needs_missing_encoder(model, guide, prior):
        with pytest.raises(ConfigError, match="no encoder"):
            _setup(model, guide, elbo, prior, likelihood)
        return
    config, model, guide = _setup(model, guide, elbo, prior, likelihood)
    if elbo not in USABLE[config.model]:
        with pytest.raises(ConfigError, match="--elbo"):
            build_elbo(config, model)
        return
    estimator = build_elbo(config, model)
    x = _data(config.likelihood)
    idx = torch.arange(B) * 2
    # the guide samples every latent site of the model, with per-datapoint batch shape (B,)
    guide_trace = poutine.trace(guide).get_trace(x[idx], idx, N)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x[idx], idx, N)
    latent = [n for n, s in model_trace.nodes.items()
              if s["type"] == "sample" and not s["is_observed"] and n in model.latent_sites]
    assert latent and set(latent) <= set(guide_trace.nodes)
    for name in latent:
        assert guide_trace.nodes[name]["value"].shape[:1] == (B,)
        assert model_trace.nodes[name]["fn"].batch_shape == (B,)

    params = [*model.parameters(), *guide.parameters()]
    before = [p.detach().clone() for p in params]
    optimizer = make_optimizers([model, guide], lr=1e-2)
    if elbo in PATH_DERIVATIVE and config.guide in FLOW_GUIDES:
        with pytest.raises(ConfigError, match="flow guide such as iaf"):
            loss_and_grads(estimator, model, guide, x[idx], idx, N)
        return
    with pyro.validation_enabled(True):
        loss = loss_and_grads(estimator, model, guide, x[idx], idx, N)
    assert math.isfinite(loss)
    grads = [None if p.grad is None else p.grad.to_dense() for p in params]  # per-example tables: sparse
    assert all(g is None or torch.isfinite(g).all() for g in grads)
    assert any(g is not None and g.abs().sum() > 0 for g in grads), "no gradient reached the parameters"
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, params))
    # per-example tables: the batch's rows moved, every other row is bit-for-bit unchanged
    others = torch.ones(N, dtype=torch.bool)
    others[idx] = False
    for name in getattr(guide, "local_tables", ()):
        table = getattr(guide, name).weight
        old = before[[i for i, p in enumerate(params) if p is table][0]]
        assert torch.equal(table[others], old[others]), name
        assert not torch.equal(table[idx], old[idx]), name
    # config.json's record of each latent site's KL treatment (pyrovae.inference.kl)
    terms = kl_terms(config.elbo, model, guide, x[idx], idx, N)
    assert terms and set(terms) <= set(model.latent_sites) and set(terms.values()) <= {ANALYTIC, MONTE_CARLO, ENUMERATED}
    if config.elbo != "meanfield":
        assert ANALYTIC not in terms.values()
    elif config.prior == "standard-normal" and config.guide == "amortized" and config.model == "vae":
        assert terms == {"z": ANALYTIC}
    # a finite per-datapoint IWAE estimate after the step
    result = iwae(model, guide, x, num_samples=4, batch_size=11, idx=torch.arange(N))
    assert result.log_likelihood.shape == (N,)
    assert torch.isfinite(result.log_likelihood).all()
