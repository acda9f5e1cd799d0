"""Per-example fitting and missing-pixel imputation against the exact PPCA answers."""

import torch
from torch.distributions import MultivariateNormal

from pyrovae.inference.imputation import impute_batch
from pyrovae.inference.local_fit import fit_local
from tests.exact import make_ppca
from tests.stats import assert_mean_within


def test_local_fit_from_scratch_reaches_exact_posterior():
    ppca = make_ppca(num_pixels=6, latent_dim=2, num_data=10)
    torch.manual_seed(0)
    guide, curve = fit_local(ppca.model, ppca.x, torch.zeros(10, 2), torch.ones(10, 2), steps=600, lr=0.03,
                             num_particles=32, record_every=100)
    loc, scale = ppca.posterior(ppca.x)
    assert torch.allclose(guide.loc, loc, atol=0.05)
    assert torch.allclose(guide.scale, scale, atol=0.05)
    assert curve[0][0] == 0 and curve[-1][0] == 600
    assert curve[-1][1] > curve[0][1] + 1  # the ELBO went up
    exact = ppca.log_marginal(ppca.x).mean().item()
    assert curve[-1][1] < exact + 0.1 and curve[-1][1] > exact - 0.2  # the gap all but closes


def test_imputation_matches_exact_gaussian_conditional():
    """log p-hat(x_m | x_o) and the posterior predictive mean against the exact Gaussian
    conditional of PPCA. The estimator is consistent (its bias is O(1/K), far below the Monte
    Carlo error at K = 4000): each example's mean over R = 10 independent repeats must lie within
    5 standard errors computed from the repeats, and the errors must be small enough to catch
    a 0.2-nat or 0.1-pixel mistake on a typical example (the power check)."""
    ppca = make_ppca(num_pixels=6, latent_dim=2, sigma=0.5, num_data=25)
    x = ppca.x
    observed = torch.tensor([True, True, False, True, False, False])
    mask = observed.expand(25, 6)
    torch.manual_seed(1)
    guide, _ = fit_local(ppca.model, x, torch.zeros(25, 2), torch.ones(25, 2), steps=400, lr=0.03,
                         num_particles=16, mask=mask)
    repeats = []
    for r in range(10):
        torch.manual_seed(100 + r)
        repeats.append(impute_batch(ppca.model, guide, x, mask, num_samples=4000))

    cov = ppca.W @ ppca.W.T + ppca.sigma**2 * torch.eye(6)
    o, m = observed, ~observed
    gain = cov[m][:, o] @ torch.linalg.inv(cov[o][:, o])
    cond_mean = ppca.b[m] + (x[:, o] - ppca.b[o]) @ gain.T
    cond_cov = cov[m][:, m] - gain @ cov[o][:, m]
    exact = MultivariateNormal(cond_mean, cond_cov).log_prob(x[:, m]).double()
    for estimates, truth, power in (
        (torch.stack([r.log_likelihood_missing.double() for r in repeats]), exact, 0.2 / 5),  # (R, B)
        (torch.stack([r.mean[:, m].double() for r in repeats]), cond_mean.double(), 0.1 / 5),  # (R, B, 3)
    ):
        se = assert_mean_within(estimates, truth)
        assert (se > 0).all() and se.median() < power  # outlying examples have heavier-tailed weights
