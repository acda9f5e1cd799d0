"""AIS and BDMC against closed-form log p(x): probabilistic PCA and a linear-Gaussian mixture
whose component is summed exactly."""

import json
import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from pyrovae import cli
from pyrovae.analysis.ais_options import AISOptions
from pyrovae.analysis.bdmc import bdmc
from pyrovae.errors import ConfigError
from pyrovae.inference.ais import ais, schedule
from pyrovae.models.likelihoods import GaussianLikelihood
from pyrovae.models.mixture_vae import MixtureVAE
from pyrovae.models.priors.mixture import MixtureOfGaussians
from tests.exact import make_categorical, make_ppca


@pytest.fixture(scope="module")
def ppca():
    return make_ppca(num_pixels=6, latent_dim=3, sigma=0.5, num_data=40)


def _error_and_se(estimate, exact):
    """Mean of estimate - exact over datapoints and its standard error: each datapoint has its own
    independent chains, so the per-datapoint errors are independent."""
    err = (estimate - exact).double()
    return float(err.mean()), float(err.std() / math.sqrt(len(err)))


def test_schedule_runs_from_0_to_1_increasing():
    for kind in ("sigmoid", "linear"):
        betas = schedule(10, kind)
        assert betas[0] == 0 and betas[-1] == 1 and (betas.diff() > 0).all()
    with pytest.raises(ConfigError, match="schedule"):
        schedule(10, "cosine")


def test_ais_matches_the_exact_ppca_log_marginal_within_mc_error(ppca):
    """From a shifted, too-wide guide (so the path has work to do), AIS with T = 50 agrees with
    log N(x; b, W W^T + sigma^2 I) within 5 standard errors of the per-datapoint errors."""
    torch.manual_seed(0)
    guide = ppca.guide_at(loc_shift=0.5, scale_factor=1.5)
    result = ais(ppca.model, guide, ppca.x, AISOptions(num_steps=50, num_chains=8, num_leapfrog=5))
    error, se = _error_and_se(result.log_likelihood, ppca.log_marginal(ppca.x))
    assert abs(error) < 5 * se and se < 0.05, (error, se)
    assert 0.4 < float(result.acceptance.mean()) < 0.95  # adapted towards a* = 0.65
    # the reported Monte Carlo error is the spread of the per-datapoint errors (within a factor 2)
    assert 0.5 < float(result.mc_stderr.pow(2).mean().sqrt()) / (se * math.sqrt(len(ppca.x))) < 2


def test_ais_from_the_prior_approaches_the_exact_value_as_T_grows(ppca):
    """AIS is a stochastic lower bound: with T = 3 it is far below log p(x) (a heavy-tailed error, so
    200 datapoints); with T = 30 it is closer by more than 5 standard errors of both, and exact."""
    torch.manual_seed(1)
    x = ppca.marginal.sample((200,))
    exact = ppca.log_marginal(x)
    errors = {}
    for T in (3, 30):
        r = ais(ppca.model, None, x, AISOptions(num_steps=T, num_chains=4, num_leapfrog=5, start="prior"), 200)
        errors[T] = _error_and_se(r.log_likelihood, exact)
    (short, se_short), (long, se_long) = errors[3], errors[30]
    assert short + 5 * se_short < 0  # below the truth
    assert short + 5 * (se_short + se_long) < long and abs(long) < 5 * se_long + 0.05, errors


def test_bdmc_bounds_bracket_the_exact_value_and_tighten_with_T(ppca):
    """On data simulated from PPCA, forward AIS is not above log p(x) and reverse AIS is not below
    it (each within 5 standard errors); their gap shrinks from T = 3 to T = 50."""
    guide = ppca.guide_at(loc_shift=0.5, scale_factor=1.5)
    gaps = {}
    for T in (3, 50):
        result = bdmc(ppca.model, guide, num_examples=40, num_samples=100, seed=2,
                      options=AISOptions(num_steps=T, num_chains=4, num_leapfrog=5))
        assert result.x.shape == (40, 6)  # the simulated data the bounds were computed on
        exact = ppca.log_marginal(result.x)
        lower, se_lower = _error_and_se(result.lower, exact)
        upper, se_upper = _error_and_se(result.upper, exact)
        assert lower < 5 * se_lower and upper > -5 * se_upper, (T, lower, upper, se_lower, se_upper)
        gaps[T] = result.report["gap"]
    assert gaps[50][0] + 5 * (gaps[50][1] + gaps[3][1]) < gaps[3][0] and gaps[3][0] > 0.2, gaps


def _linear_gaussian_mixture():
    torch.manual_seed(3)
    D, P, sigma = 2, 4, 0.6
    model = MixtureVAE(MixtureOfGaussians(D, 3), GaussianLikelihood(P, scale=sigma), D, hidden=())
    with torch.no_grad():
        model.prior.locs.mul_(2.0)
    W, b = model.decoder[0].weight.detach(), model.decoder[0].bias.detach()
    prior = model.prior
    log_pi = prior.mixing().logits.detach().log_softmax(-1)
    mean = prior.locs.detach() @ W.T + b  # (C, P)
    cov = W @ torch.diag_embed(prior.scales.detach() ** 2) @ W.T + sigma**2 * torch.eye(P)  # (C, P, P)

    def log_marginal(x):  # log sum_c pi_c N(x; W mu_c + b, W S_c W^T + sigma^2 I)
        return (log_pi + MultivariateNormal(mean, cov).log_prob(x.unsqueeze(-2))).logsumexp(-1)

    return model, log_marginal


def test_ais_sums_a_mixture_component_exactly():
    """The mixture-prior VAE with a linear decoder and Gaussian noise: log p(x) is a finite sum of
    Gaussians. AIS from the prior marginal p(z) = sum_c p(c) p(z|c) anneals z with the component
    summed out of both ends. (From this untrained encoder's q, T = 100 is still 0.3 nats short;
    T = 400 comes within 0.06 ± 0.06.)"""
    model, log_marginal = _linear_gaussian_mixture()
    x = model.sample(40).detach()
    torch.manual_seed(4)
    r = ais(model, None, x, AISOptions(num_steps=100, num_chains=4, num_leapfrog=5, start="prior"))
    error, se = _error_and_se(r.log_likelihood, log_marginal(x))
    assert abs(error) < 5 * se and se < 0.1, (error, se)


def test_ais_refuses_discrete_guide_sites_and_bad_options(ppca):
    model, guide, x = make_categorical()
    with pytest.raises(ConfigError, match="discrete site.*--method iwae"):
        ais(model, guide, x, AISOptions(num_steps=2))
    for bad, flag in ((dict(num_steps=0), "--num-steps"), (dict(target_acceptance=1.0), "--target-acceptance"),
                      (dict(start="posterior"), "--ais-start"), (dict(step_size=-1.0), "--step-size")):
        with pytest.raises(ConfigError, match=flag):
            ais(ppca.model, None, ppca.x, AISOptions(**bad))


def test_ais_commands_on_a_run(tiny_run, tmp_path, capsys):
    """``evaluate --method ais`` scores the same random examples as the IWAE evaluation with the same
    seed (its IWAE fields equal that report's); ``bdmc`` and ``compare-inference --method ais`` write
    their reports; a bad option is one line and exit status 2."""
    run = tiny_run(4)
    small = ["--num-steps", "8", "--num-chains", "2", "--num-leapfrog", "2"]
    assert cli.main(["evaluate", str(run), "--num-examples", "12", "--num-samples", "30"]) == 0
    assert cli.main(["evaluate", str(run), "--num-examples", "12", "--num-samples", "30", "--method", "ais",
                     *small]) == 0
    plain = json.loads((run / "eval_test_best_amortized_K30_n12.json").read_text())
    annealed = json.loads((run / "eval_test_best_amortized_K30_n12_ais_T8_C2.json").read_text())
    assert annealed["log_likelihood_iwae"] == plain["log_likelihood"] and annealed["elbo"] == plain["elbo"]
    assert annealed["method"] == "ais" and annealed["num_examples"] == 12
    assert 0 < annealed["ais"]["acceptance_mean"] <= 1 and annealed["log_likelihood"] < 0
    assert "AIS" in capsys.readouterr().err
    assert cli.main(["bdmc", str(run), "--num-examples", "6", "--num-samples", "20", *small]) == 0
    report = json.loads((run / "bdmc_best_n6_ais_T8_C2.json").read_text())
    assert report["num_examples"] == 6 and (run / "bdmc_best_n6_ais_T8_C2.png").exists()
    assert report["gap"][0] == pytest.approx(report["upper"][0] - report["lower"][0])
    assert cli.main(["compare-inference", str(run), "--num-examples", "4", "--num-samples", "20",
                     "--fit-steps", "3", "--method", "ais", *small]) == 0
    comparison = json.loads((run / "compare_inference_test_best_ais_T8_C2.json").read_text())
    assert comparison["approximation_gap_ais"][0] == pytest.approx(
        comparison["log_likelihood_ais"][0] - comparison["elbo_qstar"][0])
    capsys.readouterr()
    assert cli.main(["evaluate", str(run), "--method", "ais", "--num-chains", "0"]) == 2
    assert "--num-chains" in capsys.readouterr().err
