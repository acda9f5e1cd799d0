"""ELBO estimators: registry, the iwae minibatch scaling, and exact values and gradients on PPCA."""

import math

import pyro
import pyro.poutine as poutine
import pytest
import torch

from pyrovae.errors import ConfigError, UnknownNameError
from pyrovae.inference.elbos import ELBOS, loss_and_grads, make_elbo
from tests.exact import make_ppca


def test_unknown_name_lists_valid_ones():
    with pytest.raises(UnknownNameError) as err:
        make_elbo("elbo-of-my-dreams")
    for name in ELBOS:
        assert name in str(err.value)
    assert isinstance(err.value, KeyError)


@pytest.mark.parametrize("num_particles", [0, -2])
def test_non_positive_particles_rejected(num_particles):
    with pytest.raises(ConfigError, match="positive"):
        make_elbo("trace", num_particles)


def test_iwae_needs_two_particles():
    with pytest.raises(ConfigError, match="num-particles"):
        make_elbo("iwae", 1)


def _zero_grads(*modules):
    for m in modules:
        for p in m.parameters():
            p.grad = None


@pytest.mark.parametrize("elbo", ["trace", "tracegraph", "iwae"])
def test_exact_posterior_gives_exact_minibatch_loss(elbo):
    """With q = p(z|x), log w = log p(x) for every sample, so each estimator returns
    -(N/B) * sum over the batch of log p(x), with no Monte Carlo error."""
    ppca = make_ppca(num_data=20)
    guide = ppca.guide_at()
    idx = torch.tensor([1, 4, 7, 8, 15])
    estimator = make_elbo(elbo, num_particles=3 if elbo == "iwae" else 1)
    loss = loss_and_grads(estimator, ppca.model, guide, ppca.x[idx], idx, 20)
    expected = -ppca.log_marginal(ppca.x[idx]).sum().item() * 20 / 5
    assert loss == pytest.approx(expected, rel=1e-5)


def test_meanfield_exact_posterior_loss_in_expectation():
    """meanfield uses the analytic KL and a Monte Carlo reconstruction term, so even at
    q = p(z|x) it has Monte Carlo error; its mean over 20,000 particles is -(N/B) sum log p(x)."""
    ppca = make_ppca(num_data=20)
    idx = torch.tensor([1, 4, 7, 8, 15])
    torch.manual_seed(0)
    loss = loss_and_grads(make_elbo("meanfield", 20000), ppca.model, ppca.guide_at(), ppca.x[idx], idx, 20)
    expected = -ppca.log_marginal(ppca.x[idx]).sum().item() * 20 / 5
    assert loss == pytest.approx(expected, abs=0.6)  # per-particle std ~18, so the mean's std ~0.13


@pytest.mark.parametrize("name", ["iwae", "iwae-dreg", "iwae-stl"])
def test_iwae_minibatch_is_per_datapoint_bound(name):
    """The iwae losses on a subsampled batch equal -(N/B) sum_i log mean_k w_ik, computed by hand
    from the same draws; Pyro's plate scale alone would give a different (sharper) quantity."""
    ppca = make_ppca(num_data=20)
    guide = ppca.guide_at(loc_shift=0.7, scale_factor=1.8)
    idx = torch.tensor([0, 3, 5, 9])
    K, N, B = 4, 20, 4
    estimator = make_elbo(name, K)
    torch.manual_seed(5)
    loss = loss_and_grads(estimator, ppca.model, guide, ppca.x[idx], idx, N)
    torch.manual_seed(5)
    with pyro.plate("particles", K, dim=-2):
        g = poutine.trace(guide).get_trace(ppca.x[idx], idx, N)
        m = poutine.trace(poutine.replay(ppca.model, trace=g)).get_trace(ppca.x[idx], idx, N)
    m.compute_log_prob(), g.compute_log_prob()
    lw = m.nodes["z"]["unscaled_log_prob"] + m.nodes["x"]["unscaled_log_prob"] - g.nodes["z"]["unscaled_log_prob"]
    assert lw.shape == (K, B)
    expected = -(torch.logsumexp(lw, 0) - math.log(K)).sum().item() * N / B
    assert loss == pytest.approx(expected, rel=1e-5)
    torch.manual_seed(5)
    unscaled = make_elbo("iwae", K).loss(ppca.model, guide, ppca.x[idx], idx, N)
    assert abs(unscaled - expected) > 1.0  # the bias loss_and_grads removes


@pytest.mark.parametrize("elbo", ["trace", "meanfield", "tracegraph", "iwae"])
def test_decoder_gradient_matches_fisher_identity(elbo):
    """At q = p(z|x), grad_theta ELBO = grad_theta log p(x); for the decoder bias b this is
    sum_i Sigma^{-1} (x_i - b) with Sigma = W W^T + sigma^2 I (closed form)."""
    ppca = make_ppca(num_data=20)
    guide = ppca.guide_at()
    _zero_grads(ppca.model, guide)
    torch.manual_seed(0)
    loss_and_grads(make_elbo(elbo, num_particles=4000), ppca.model, guide, ppca.x)
    cov = ppca.W @ ppca.W.T + ppca.sigma**2 * torch.eye(ppca.W.shape[0])
    exact = torch.linalg.solve(cov, (ppca.x - ppca.b).T).sum(1)  # d/db sum_i log p(x_i)
    grad = -ppca.model.decoder[0].bias.grad  # loss = -ELBO
    # per-sample gradient std is about 11 here, so the 4000-sample mean is within ~0.2
    assert torch.allclose(grad, exact, atol=1.0), (grad, exact)
    assert exact.abs().max() > 5  # the check is not trivially satisfied by zeros
