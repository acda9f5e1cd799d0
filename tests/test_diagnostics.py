"""PSIS k-hat, posterior-collapse statistics and the NUTS reference, against exact answers."""

import json
import math

import numpy as np
import pytest
import torch
from pyrovae.inference.diagnostics import mutual_information, per_dimension_kl
from pyrovae.inference.guides import gaussian_params
from pyrovae.inference.marginal import iwae
from pyrovae.inference.mcmc import nuts_posterior

from pyrovae import cli
from pyrovae.analysis.evaluate import _collapse
from tests.exact import make_ppca


@pytest.fixture(scope="module")
def ppca():
    return make_ppca(num_pixels=6, latent_dim=3, num_data=40)


def test_khat_small_at_the_posterior_and_large_for_a_mismatched_guide(ppca):
    torch.manual_seed(0)
    exact = iwae(ppca.model, ppca.guide_at(), ppca.x, num_samples=2000, psis=True)
    wider = iwae(ppca.model, ppca.guide_at(scale_factor=1.1), ppca.x, num_samples=2000, psis=True)
    narrow = iwae(ppca.model, ppca.guide_at(loc_shift=0.5, scale_factor=0.5), ppca.x, num_samples=2000, psis=True)
    assert (exact.khat < 0.5).all() and (exact.psis_ess > 1999).all()  # equal weights: k-hat -inf, ESS = K
    assert (wider.khat < 0.5).all()
    assert narrow.khat.median() > 0.7 and (narrow.psis_ess < 200).all()


def test_nuts_recovers_exact_ppca_posterior():
    ppca = make_ppca(num_pixels=5, latent_dim=2, num_data=3)
    result = nuts_posterior(ppca.model, ppca.x, num_chains=2, num_samples=400, warmup_steps=300)
    assert result.samples.shape == (2, 400, 3, 2)
    assert result.summary["r_hat"].max() < 1.05
    draws = result.samples.reshape(-1, 3, 2)
    loc, scale = ppca.posterior(ppca.x)
    # Monte Carlo standard errors of the mean and standard deviation from ArviZ (effective
    # sample sizes of the chains), a library independent of the sampler
    mcse = torch.tensor(result.summary["mcse_mean"].to_numpy(), dtype=torch.float32).reshape(3, 2)
    mcse_sd = torch.tensor(result.summary["mcse_sd"].to_numpy(), dtype=torch.float32).reshape(3, 2)
    assert ((draws.mean(0) - loc).abs() < 5 * mcse).all(), ((draws.mean(0) - loc) / mcse)
    assert ((draws.std(0) - scale).abs() < 5 * mcse_sd).all(), ((draws.std(0) - scale) / mcse_sd)
    assert mcse.max() < 0.1 * scale.min() and mcse_sd.max() < 0.1 * scale.min()  # power


def test_per_dimension_kl_and_mutual_information():
    loc, scale = torch.zeros(50, 4), torch.ones(50, 4)
    assert torch.allclose(per_dimension_kl(loc, scale), torch.zeros(4))
    loc2 = loc.clone()
    loc2[:, 0] = 2.0
    assert per_dimension_kl(loc2, scale)[0] == pytest.approx(2.0)  # 0.5 * mu^2
    prior = None
    assert mutual_information(loc, scale, prior) == pytest.approx(0.0, abs=1e-6)  # q ignores x
    far = torch.arange(50.0)[:, None].expand(50, 4) * 100  # well-separated q(z|x): I = log N
    assert mutual_information(far, scale, prior) == pytest.approx(math.log(50), abs=1e-3)


def test_collapse_flag(ppca):
    collapsed_guide = ppca.guide_at()
    with torch.no_grad():
        collapsed_guide.encoder[0].weight.zero_()
        collapsed_guide.encoder[0].bias.zero_()
        collapsed_guide.encoder[0].bias[3:] = 0.5413  # softplus^-1(1): q(z|x) = N(0, I) = p(z)
    report = _collapse(ppca.model, *gaussian_params(collapsed_guide, ppca.x), ppca.x)
    assert report["collapsed"] and sum(report["kl_per_dimension"]) < 1e-3
    healthy = _collapse(ppca.model, *gaussian_params(ppca.guide_at(), ppca.x), ppca.x)
    assert not healthy["collapsed"] and healthy["mutual_information"] > 0.5


@pytest.mark.parametrize("dim", [1, 3])
def test_posterior_check_distances_against_hand_written_formulas(dim):
    """The posterior check's numbers, recomputed with NumPy and SciPy: the norm of the mean
    difference, the Frobenius norm of the covariance difference, and the energy distance
    2 E|X - Y| - E|X - X'| - E|Y - Y'| (V-statistic, every pair counted)."""
    from scipy.spatial.distance import cdist

    from pyrovae.analysis.posterior_check import draw_distances

    rng = np.random.default_rng(dim)
    a, b = rng.normal(0.3, 1.2, (50, dim)), rng.normal(0.0, 1.0, (40, dim))
    got = draw_distances(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32))
    assert got["mean_error"] == pytest.approx(np.linalg.norm(a.mean(0) - b.mean(0)), rel=1e-5)
    cov = (np.atleast_2d(np.cov(a.T)) - np.atleast_2d(np.cov(b.T)))
    assert got["cov_error"] == pytest.approx(np.linalg.norm(cov), rel=1e-5)
    energy = 2 * cdist(a, b).mean() - cdist(a, a).mean() - cdist(b, b).mean()
    assert got["energy_distance"] == pytest.approx(energy, rel=1e-4)
    same = draw_distances(torch.tensor(a, dtype=torch.float32), torch.tensor(a, dtype=torch.float32))
    assert same == {"mean_error": 0.0, "cov_error": 0.0, "energy_distance": pytest.approx(0.0, abs=1e-9)}


@pytest.fixture(scope="module")
def run_2d(tiny_run):
    return tiny_run(2)


def test_evaluate_reports_khat_and_collapse(run_2d, capsys):
    assert cli.main(["evaluate", str(run_2d), "--num-samples", "200"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert 0 <= report["khat_share_above_0.7"] <= 1 and report["khat_median"] <= report["khat_max"]
    assert len(report["kl_per_dimension"]) == 2 and report["collapsed"] is False
    assert "PSIS k-hat:" in captured.err and "posterior collapse: no" in captured.err
    assert (run_2d / "khat_test_best_amortized_K200.png").stat().st_size > 1000
    assert (run_2d / "collapse_test_best_amortized_K200.png").stat().st_size > 1000


def test_posterior_check_command(run_2d, capsys):
    args = ["posterior-check", str(run_2d), "--num-examples", "2", "--num-chains", "2", "--num-samples", "60",
            "--warmup-steps", "60", "--fit-steps", "20"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "max R-hat" in out and out.count("flow") == 2
    report = json.loads((run_2d / "posterior_check_test_best.json").read_text())
    assert len(report["examples"]) == 2
    for row in report["examples"]:
        for name in ("amortized", "per-example", "flow"):
            assert all(math.isfinite(row[name][k]) for k in ("mean_error", "cov_error", "energy_distance"))
    assert (run_2d / "posterior_check_test_best.png").stat().st_size > 1000
