"""β, KL warm-up and free bits against closed forms on probabilistic PCA; the defaults change
nothing; a resumed run continues the warm-up where it stopped."""

import math

import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pyrovae.build import build_elbo
from pyrovae.config import TrainConfig
from pyrovae.errors import ConfigError
from pyrovae.inference.elbos import loss_and_grads
from pyrovae.inference.guides import gaussian_params
from pyrovae.inference.objective_weights import FreeBits_ELBO, KLWeighted
from pyrovae.runs.checkpoint import load_checkpoint
from pyrovae.runs.train import train
from tests.exact import make_ppca


@pytest.fixture(scope="module")
def ppca():
    ppca = make_ppca(num_data=10)
    return ppca, ppca.guide_at(loc_shift=0.4, scale_factor=1.5)


def _loss(elbo, ppca, guide, seed=0):
    torch.manual_seed(seed)
    return loss_and_grads(elbo, ppca.model, guide, ppca.x)


def _kl(guide, x):
    """KL(N(mu, diag sigma^2) || N(0, I)) summed over x, by the closed form."""
    with torch.no_grad():
        loc, scale = gaussian_params(guide, x)
    return float(0.5 * (scale**2 + loc**2 - 1 - torch.log(scale**2)).sum())


def test_the_defaults_are_todays_estimator_and_beta_1_changes_no_loss(ppca):
    ppca, guide = ppca
    assert type(build_elbo(TrainConfig(), ppca.model)) is Trace_ELBO
    for inner in (Trace_ELBO, TraceMeanField_ELBO):
        assert _loss(KLWeighted(inner(), beta=1.0), ppca, guide) == _loss(inner(), ppca, guide)


@pytest.mark.parametrize("beta", [0.0, 0.25, 4.0])
def test_beta_weights_the_closed_form_kl(ppca, beta):
    """meanfield's KL is analytic here, so on the same draws loss(beta) - loss(1) = (beta - 1) KL
    (the loss is -E[log p(x|z)] + beta KL)."""
    ppca, guide = ppca
    difference = _loss(KLWeighted(TraceMeanField_ELBO(), beta=beta), ppca, guide) - _loss(TraceMeanField_ELBO(), ppca,
                                                                                            guide)
    assert difference == pytest.approx((beta - 1) * _kl(guide, ppca.x), rel=1e-4)


def test_warmup_rises_linearly_from_zero(ppca):
    ppca, guide = ppca
    elbo = KLWeighted(TraceMeanField_ELBO(), beta=0.5, warmup_steps=10)
    weights = []
    for step in (0, 5, 10, 30):
        elbo.set_step(step)
        weights.append(elbo.weight)
    assert weights == [0.0, 0.25, 0.5, 0.5]
    elbo.set_step(5)
    expected = _loss(KLWeighted(TraceMeanField_ELBO(), beta=0.25), ppca, guide)
    assert _loss(elbo, ppca, guide) == expected


def test_free_bits_floor_each_dimension(ppca):
    """Below the floor the KL counts as N * D * lambda; at lambda = 0 free bits are plain trace."""
    ppca, guide = ppca
    N, D = ppca.x.shape[0], ppca.model.latent_dim
    reconstruction_only = _loss(KLWeighted(Trace_ELBO(), beta=0.0), ppca, guide)
    assert _loss(FreeBits_ELBO(free_bits=50.0), ppca, guide) == pytest.approx(reconstruction_only + N * D * 50.0,
                                                                              rel=1e-6)
    assert _loss(FreeBits_ELBO(free_bits=0.0), ppca, guide) == pytest.approx(_loss(Trace_ELBO(), ppca, guide),
                                                                             rel=1e-5)
    # the floored dimensions pass no gradient to the encoder's scales through the KL
    guide.zero_grad()
    _loss(FreeBits_ELBO(free_bits=50.0), ppca, guide)
    floored = [p.grad.clone() for p in guide.parameters()]
    guide.zero_grad()
    _loss(KLWeighted(Trace_ELBO(), beta=0.0), ppca, guide)
    assert all(torch.allclose(a, p.grad, atol=1e-6) for a, p in zip(floored, guide.parameters()))


@pytest.mark.parametrize("options, message", [
    ({"beta": 0.5, "elbo": "iwae", "num_particles": 2}, "--elbo iwae has none to weight"),
    ({"free_bits": 0.1, "elbo": "meanfield"}, "use it with --elbo trace"),
    ({"beta": -1.0}, "--beta must be a number >= 0"),
])
def test_bad_weights_are_refused(ppca, options, message):
    with pytest.raises(ConfigError, match=message):
        build_elbo(TrainConfig(**options).validate(), ppca[0].model)


def test_a_resumed_run_continues_the_warmup(tmp_path):
    config = TrainConfig(hidden=(16,), latent_dim=2, eval_num_samples=0, kl_warmup=3, beta=0.5, epochs=2)
    train(config, str(tmp_path / "straight"), progress=False)
    train(TrainConfig(**{**config.to_dict(), "epochs": 1}), str(tmp_path / "run"), progress=False)
    train(config, str(tmp_path / "run"), resume=True, progress=False)
    a, b = (load_checkpoint(str(tmp_path / name / "last.pt")) for name in ("straight", "run"))
    assert a["step"] == b["step"] and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert math.isfinite(a["best_valid_elbo"])
