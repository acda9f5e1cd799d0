"""The IWAE evaluator against closed-form answers on probabilistic PCA."""

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from pyrovae.inference.marginal import active_units, iwae, log_weights
from tests.exact import make_ppca
from tests.stats import assert_mean_within


@pytest.fixture(scope="module")
def ppca():
    return make_ppca(num_pixels=6, latent_dim=3, sigma=0.5, num_data=40)


def _independent_terms(ppca, shift, factor, num_samples, seed):
    """``(log p(x | z), log q(z | x) - log p(z))``, each (S, N) in float64, for S draws z ~ q of
    ``ppca.guide_at(shift, factor)`` made here with torch.distributions: an independent yardstick
    for the evaluator's Monte Carlo error (their difference is the log weight)."""
    loc, scale = _guide_moments(ppca, shift, factor)
    gen = torch.Generator().manual_seed(seed)
    z = (loc + scale * torch.randn((num_samples, *loc.shape), generator=gen)).double()
    loc, scale, W, b, x = loc.double(), scale.double(), ppca.W.double(), ppca.b.double(), ppca.x.double()
    log_lik = Normal(z @ W.T + b, ppca.sigma).log_prob(x).sum(-1)
    return log_lik, (Normal(loc, scale).log_prob(z) - Normal(0.0, 1.0).log_prob(z)).sum(-1)


def _guide_moments(ppca, shift, factor):
    """q(z | x) = N(A (x - b) + shift, (sqrt(diag C) * factor)^2) of ``ppca.guide_at(shift, factor)``."""
    loc, scale = ppca.posterior(ppca.x)
    return loc + shift, scale * factor


def _delta_method_stderr(log_w):
    """Standard error of log (1/K sum_k w_k) per datapoint: sqrt(Var(w) / (K E[w]^2))."""
    w = (log_w - log_w.max(0).values).exp()
    return (w.var(0) / (len(w) * w.mean(0) ** 2)).sqrt()


def test_exact_posterior_guide_closes_the_gap(ppca):
    torch.manual_seed(0)
    exact = ppca.log_marginal(ppca.x).double()
    result = iwae(ppca.model, ppca.guide_at(), ppca.x, num_samples=3)
    # log w = log p(x) for every sample: IWAE, ELBO and log p(x) coincide, ESS is K
    assert torch.allclose(result.log_likelihood, exact, atol=1e-4)
    assert torch.allclose(result.elbo, exact, atol=1e-4)
    assert torch.allclose(result.ess, torch.full_like(result.ess, 3.0), atol=1e-3)


def test_iwae_matches_exact_log_marginal_within_mc_error(ppca):
    torch.manual_seed(1)
    exact = ppca.log_marginal(ppca.x).double()
    result = iwae(ppca.model, ppca.guide_at(loc_shift=0.4, scale_factor=1.6), ppca.x, num_samples=5000,
                  batch_size=7, max_rows=3000)  # odd chunks exercise the streaming log-sum-exp
    err = result.log_likelihood - exact
    log_lik, log_q_minus_prior = _independent_terms(ppca, 0.4, 1.6, 5000, seed=11)
    se = _delta_method_stderr(log_lik - log_q_minus_prior)
    assert se.max() < 0.05  # power: resolves a 0.2-nat error
    # IWAE's bias, about Var(w) / (2 K E[w]^2) = se^2 / 2 (delta method), is added to the error allowed
    assert (err.abs() < 5 * se + se**2).all(), (err, se)
    # the average over datapoints is tighter still
    assert abs(err.mean()) < 5 * se.pow(2).mean().sqrt() / math.sqrt(len(err)) + se.pow(2).mean()
    assert result.log_likelihood.shape == (40,)


def test_elbo_equals_log_marginal_minus_kl_and_stays_below(ppca):
    torch.manual_seed(2)
    shift, factor = 0.5, 0.6
    exact = ppca.log_marginal(ppca.x).double()
    guide = ppca.guide_at(shift, factor)
    result = iwae(ppca.model, guide, ppca.x, num_samples=5000)
    expected = exact - ppca.kl_to_posterior(ppca.x, shift, factor).double()
    with torch.no_grad():
        lw, _, _, _ = log_weights(ppca.model, guide, ppca.x, 5000)  # (S, B)
    se = assert_mean_within(lw, expected, k=4)
    assert ((result.elbo - expected).abs() < 4 * se).all()
    assert (result.elbo < exact).all()
    # reconstruction and KL against their closed forms (Gaussian q, linear-Gaussian likelihood)
    loc, scale = _guide_moments(ppca, shift, factor)
    kl_exact = kl_divergence(Normal(loc, scale), Normal(0.0, 1.0)).sum(-1).double()
    mean = loc @ ppca.W.T + ppca.b
    recon_exact = (-0.5 * math.log(2 * math.pi * ppca.sigma**2)
                   - ((ppca.x - mean) ** 2 + scale.pow(2) @ ppca.W.pow(2).T) / (2 * ppca.sigma**2)).sum(-1).double()
    # standard errors from 5000 independent draws of z ~ q made here with torch.distributions
    log_lik, log_q_minus_prior = _independent_terms(ppca, shift, factor, 5000, seed=7)
    for name, ours, exact_term, draws in (("kl", result.kl, kl_exact, log_q_minus_prior),
                                          ("reconstruction", result.reconstruction, recon_exact, log_lik)):
        se_term = assert_mean_within(draws, exact_term)  # the yardstick holds
        assert ((ours - exact_term).abs() < 5 * se_term).all(), (name, ours - exact_term, se_term)


def test_iwae_increases_with_k_on_average(ppca):
    guide = ppca.guide_at(loc_shift=0.5, scale_factor=2.0)
    exact = ppca.log_marginal(ppca.x).double().mean()
    means = []
    for K in (1, 10, 100, 1000):
        torch.manual_seed(3)
        means.append(float(iwae(ppca.model, guide, ppca.x, num_samples=K).log_likelihood.mean()))
    assert means[0] < means[1] < means[2] <= means[3] + 1e-3, means
    assert means[3] < exact + 0.01
    assert exact - means[3] < 0.1 * (exact - means[0])  # most of the gap is closed at K=1000


def test_posterior_mean_and_active_units(ppca):
    result = iwae(ppca.model, ppca.guide_at(), ppca.x, num_samples=2)
    loc, _ = ppca.posterior(ppca.x)
    assert torch.allclose(result.posterior_mean["z"].float(), loc, atol=1e-5)
    assert active_units(loc) == 3
    collapsed = torch.cat([loc[:, :1], torch.zeros(40, 2)], dim=1)
    assert active_units(collapsed) == 1


def test_global_latent_is_refused():
    import pyro
    import pyro.distributions as dist

    class Model(torch.nn.Module):
        max_plate_nesting = 1

        def forward(self, x, idx=None, num_data=None):
            mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
            with pyro.plate("data", x.shape[0], dim=-1):
                pyro.sample("x", dist.Normal(mu, 1.0), obs=x[:, 0])

    def guide(x, idx=None, num_data=None):
        pyro.sample("mu", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="per-datapoint"):
        iwae(Model(), guide, torch.zeros(4, 1), num_samples=3)
