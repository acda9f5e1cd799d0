"""Gradient estimators against closed-form gradients, and ``compare-estimators`` end to end.

The PPCA model (tests/exact.py) has a closed-form ELBO for a linear-Gaussian guide, so its exact
gradient comes from autograd; the categorical model's ELBO is a finite sum. Every unbiased
estimator's mean over R draws must match the exact gradient coordinate by coordinate within 5
standard errors, and the standard errors must be small enough for that to mean something.
"""

import json
import math
import os

import pyro
import pytest
import torch
from pyrovae.inference.elbos import loss_and_grads
from pyrovae.inference.estimators import ESTIMATORS, estimator, lineup
from pyrovae.inference.gradients import draw_gradients, parameter_groups, z_score

from pyrovae.analysis.compare_estimators import compare_estimators
from pyrovae.build import build_elbo, build_model_and_guide
from pyrovae.config import TrainConfig
from pyrovae.errors import CheckpointError, ConfigError, UnknownNameError
from tests.exact import categorical_exact_terms, make_categorical, make_ppca


def _draws(name, model, guide, x, num_draws, seed=0, directions=None):
    spec = estimator(name)
    elbo = build_elbo(spec.configure(TrainConfig()), model)
    guide_fn = spec.wrap_guide(guide)
    pyro.clear_param_store()
    torch.manual_seed(seed)
    groups = parameter_groups(model, guide)
    moments, _ = draw_gradients(lambda: loss_and_grads(elbo, model, guide_fn, x), groups, num_draws, warmup=10,
                                directions=directions)
    return moments


def _exact(loss, model, guide):
    groups = parameter_groups(model, guide)
    grads = torch.autograd.grad(loss, [p for ps in groups.values() for p in ps], allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, [p for ps in groups.values() for p in ps])]
    flat, start = {}, 0
    for name, ps in groups.items():
        flat[name] = torch.cat([g.reshape(-1) for g in grads[start:start + len(ps)]]).double()
        start += len(ps)
    return flat


def _assert_matches(moments, exact, power=0.2):
    for group, m in moments.items():
        se = (m.variances / m.count).sqrt()
        z = (m.mean - exact[group]) / (se + 1e-9)
        assert z.abs().max() < 5, (group, z)
        # power: the Monte Carlo error is a small fraction of the gradient being checked
        assert se.norm() < power * exact[group].norm(), (group, se.norm(), exact[group].norm())


def ppca_elbo(ppca, guide, x):
    """The closed-form ELBO sum over x (B, P) of PPCA with a diagonal-Gaussian guide (differentiable)."""
    loc, scale = guide.encode(x)
    W, b = ppca.model.decoder[0].weight, ppca.model.decoder[0].bias
    sigma = ppca.sigma
    resid = x - loc @ W.T - b
    expected_log_lik = (-0.5 * math.log(2 * math.pi * sigma**2) * x.shape[1]
                        - 0.5 * (resid.pow(2).sum(-1) + (scale.pow(2) @ W.pow(2).T).sum(-1)) / sigma**2)
    kl = 0.5 * (loc.pow(2) + scale.pow(2) - 1 - scale.pow(2).log()).sum(-1)
    return (expected_log_lik - kl).sum()


@pytest.fixture
def ppca_off_posterior():
    ppca = make_ppca(num_data=10)
    guide = ppca.guide_at(loc_shift=0.4, scale_factor=1.5)  # off the posterior: encoder gradients are nonzero
    return ppca, guide


def test_closed_form_elbo_is_right(ppca_off_posterior):
    """The hand-written ELBO equals log p(x) - KL(q || p(z|x)), both closed form."""
    ppca, guide = ppca_off_posterior
    with torch.no_grad():
        expected = (ppca.log_marginal(ppca.x) - ppca.kl_to_posterior(ppca.x, 0.4, 1.5)).sum()
        assert float(ppca_elbo(ppca, guide, ppca.x)) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("name", ["trace", "meanfield", "stl", "score", "score+baseline"])
def test_unbiased_estimators_match_the_closed_form_gradient(ppca_off_posterior, name):
    ppca, guide = ppca_off_posterior
    exact = _exact(-ppca_elbo(ppca, guide, ppca.x), ppca.model, guide)
    num_draws = 400 if name in ("trace", "meanfield", "stl") else 500
    _assert_matches(_draws(name, ppca.model, guide, ppca.x, num_draws), exact, power=0.2)


def test_reparameterization_has_lower_variance_than_score_function(ppca_off_posterior):
    ppca, guide = ppca_off_posterior
    variance = {name: _draws(name, ppca.model, guide, ppca.x, 300)["encoder"].summary()["variance"]
                for name in ("trace", "score", "score+baseline")}
    assert variance["trace"] < variance["score+baseline"] < variance["score"], variance


def test_iwae_gradient_at_the_exact_posterior(ppca_off_posterior):
    """With q = p(z|x) every importance weight is p(x): the IWAE estimator's decoder gradient is
    unbiased for grad log p(x), and its encoder gradient has mean zero (the bound is tight)."""
    ppca = ppca_off_posterior[0]
    guide = ppca.guide_at()
    W, b = ppca.model.decoder[0].weight, ppca.model.decoder[0].bias
    cov = W @ W.T + ppca.sigma**2 * torch.eye(W.shape[0])
    log_px = torch.distributions.MultivariateNormal(b, cov).log_prob(ppca.x).sum()
    exact = _exact(-log_px, ppca.model, guide)
    moments = _draws("iwae-5", ppca.model, guide, ppca.x, 400)
    _assert_matches({"decoder": moments["decoder"]}, exact, power=0.2)
    enc = moments["encoder"]
    z = enc.mean / (enc.variances / enc.count).sqrt().clamp_min(1e-9)
    assert z.abs().max() < 5 and enc.variances.sum() > 0


def test_stl_guide_gradient_vanishes_at_the_exact_posterior(ppca_off_posterior):
    """At q = p(z|x), log p(x, z) - log q(z|x) = log p(x) for every z: the path derivative is zero
    for every draw (Roeder et al. 2017), while trace keeps the score term's noise."""
    ppca = ppca_off_posterior[0]
    guide = ppca.guide_at()
    stl = _draws("stl", ppca.model, guide, ppca.x, 50)["encoder"]
    trace = _draws("trace", ppca.model, guide, ppca.x, 50)["encoder"]
    assert float(trace.variances.sum()) > 1.0
    assert float(stl.variances.sum()) < 1e-9 * float(trace.variances.sum())
    assert float(stl.mean.abs().max()) < 1e-4  # and its mean is the exact encoder gradient, zero


def _agree(a, b):
    """z-tests of two estimators' mean gradients from independent draws, every coordinate."""
    for group in a:
        se = (a[group].variances / a[group].count + b[group].variances / b[group].count).sqrt()
        z = (a[group].mean - b[group].mean) / se.clamp_min(1e-9)
        assert z.abs().max() < 5, (group, z)
        assert se.norm() < 0.2 * b[group].mean.norm(), (group, se.norm())  # power


def test_iwae_dreg_is_unbiased_for_the_iwae_gradient(ppca_off_posterior):
    ppca, guide = ppca_off_posterior
    dreg = _draws("iwae-dreg-5", ppca.model, guide, ppca.x, 600, seed=1)
    plain = _draws("iwae-5", ppca.model, guide, ppca.x, 600, seed=2)
    _agree(dreg, plain)


def test_iwae_dreg_guide_snr_grows_with_k_while_iwae_falls(ppca_off_posterior):
    """Rainforth et al. (2018): the reparameterized IWAE encoder gradient's SNR falls as
    O(1/sqrt K); DReG's does not (Tucker et al. 2019, fig. 1)."""
    ppca, guide = ppca_off_posterior
    snr = {name: _draws(name, ppca.model, guide, ppca.x, 200, seed=3)["encoder"].summary()["snr"]
           for name in ("iwae-5", "iwae-50", "iwae-dreg-5", "iwae-dreg-50")}
    assert snr["iwae-50"] < snr["iwae-5"] and snr["iwae-dreg-50"] > snr["iwae-dreg-5"], snr


def test_iwae_dreg_and_stl_values_are_the_iwae_bound_and_run_under_stock_svi(ppca_off_posterior):
    from pyro.infer import SVI

    from pyrovae.inference.dreg import IWAE_DReG, IWAE_STL

    ppca, guide = ppca_off_posterior
    values = {}
    for name in ("iwae", "iwae-dreg", "iwae-stl"):
        elbo = build_elbo(TrainConfig(elbo=name, num_particles=5), ppca.model)
        torch.manual_seed(0)
        values[name] = loss_and_grads(elbo, ppca.model, guide, ppca.x)
    assert values["iwae-dreg"] == pytest.approx(values["iwae"], rel=1e-6)
    assert values["iwae-stl"] == pytest.approx(values["iwae"], rel=1e-6)
    for cls in (IWAE_DReG, IWAE_STL):
        svi = SVI(ppca.model, guide, pyro.optim.Adam({"lr": 1e-3}), loss=cls(num_particles=5))
        assert math.isfinite(svi.step(ppca.x))


def test_path_derivative_estimators_refuse_discrete_and_flow_guides():
    from pyrovae.inference.stl import STL_ELBO

    with pytest.raises(ConfigError, match="--elbo stl has no gradient estimator for the discrete sites"):
        build_elbo(TrainConfig(model="bernoulli-vae", elbo="stl"), build_model_and_guide(
            TrainConfig(model="bernoulli-vae", latent_dim=2, hidden=(4,)), 4, 10)[0])
    config = TrainConfig(guide="iaf", latent_dim=2, hidden=(4,))
    model, guide = build_model_and_guide(config, 4, 10)
    with pytest.raises(ConfigError, match="flow guide such as iaf"):
        loss_and_grads(STL_ELBO(), model, guide, torch.rand(3, 4).round())


def test_vimco_matches_the_exact_gradient_of_its_k_sample_bound():
    """The 3-way categorical model with K = 3: E[log (1/K) sum_k w_k] is a sum over the 27 joint
    draws, weighted by prod_k q(y_k | x); VIMCO's mean gradient matches its autograd gradient."""
    import itertools

    from pyrovae.inference.vimco import leave_one_out_signal

    model, guide, x = make_categorical()
    K, C = 3, model.num_classes
    log_q = guide.encoder(x).log_softmax(-1)  # (B, C)
    log_joint = math.log(1 / C) + model.likelihood(model.decoder(torch.eye(C)).unsqueeze(1)).log_prob(x).T  # (B, C)
    bound = 0.0
    for ys in itertools.product(range(C), repeat=K):
        ys = list(ys)
        log_w = log_joint[:, ys] - log_q[:, ys]  # (B, K)
        bound = bound + log_q[:, ys].sum(-1).exp() * (log_w.logsumexp(-1) - math.log(K))
    exact = _exact(-bound.sum(), model, guide)
    elbo = build_elbo(TrainConfig(model="categorical-vae", elbo="vimco", num_particles=K), model)
    torch.manual_seed(0)
    moments, _ = draw_gradients(lambda: loss_and_grads(elbo, model, guide, x), parameter_groups(model, guide), 800,
                                warmup=0)
    _assert_matches(moments, exact, power=0.2)
    # the learning signal by hand for one set of log weights: L - log mean(others + geometric mean of others)
    lw = torch.tensor([[0.0], [1.0], [3.0]])
    by_hand = [math.log(sum(math.exp(v) for v in (0.0, 1.0, 3.0)) / 3)
               - math.log((sum(math.exp(v) for j, v in enumerate((0.0, 1.0, 3.0)) if j != k)
                           + math.exp(sum(v for j, v in enumerate((0.0, 1.0, 3.0)) if j != k) / 2)) / 3)
               for k in range(3)]
    assert leave_one_out_signal(lw).squeeze(-1).tolist() == pytest.approx(by_hand, rel=1e-6)


def test_discrete_estimators_match_the_exact_sum():
    model, guide, x = make_categorical()
    elbo, _ = categorical_exact_terms(model, guide, x)
    exact = _exact(-elbo.sum(), model, guide)
    enum = _draws("enum", model, guide, x, 3)
    for group, m in enum.items():  # enumeration is exact: no noise at all
        assert torch.allclose(m.mean, exact[group], atol=1e-5)
        assert float(m.variances.max()) < 1e-10
    for name in ("tracegraph", "tracegraph+baseline"):
        _assert_matches(_draws(name, model, guide, x, 600), exact, power=0.2)


def test_bias_test_detects_the_relaxed_estimator():
    """The projected z-test of compare-estimators flags relaxed-2 against enum (biased), and passes
    tracegraph+baseline (unbiased)."""
    model, guide, x = make_categorical()
    groups = parameter_groups(model, guide)
    directions = {}
    for group, m in _draws("enum", model, guide, x, 3).items():
        random = torch.randn(m.mean.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        directions[group] = {"signal": m.mean / m.mean.norm(), "random": random / random.norm()}
    draws = {name: _draws(name, model, guide, x, 400, seed=i, directions=directions)
             for i, name in enumerate(["enum", "tracegraph+baseline", "relaxed-2"])}
    assert set(groups) == {"encoder", "decoder"}
    z_relaxed = [abs(z_score(draws["relaxed-2"][g], draws["enum"][g], "signal")) for g in groups]
    z_unbiased = [abs(z_score(draws["tracegraph+baseline"][g], draws["enum"][g], d))
                  for g in groups for d in ("signal", "random")]
    assert max(z_relaxed) > 5, z_relaxed
    assert max(z_unbiased) < 4, z_unbiased


def test_low_temperature_relaxed_gradients_are_finite():
    model, guide, x = make_categorical(num_classes=10, num_pixels=30, num_data=50)
    with torch.no_grad():
        guide.encoder[-1].weight.mul_(5)  # confident q(y|x): relaxed samples underflow at low temperature
    m = _draws("relaxed-0.05", model, guide, x, 20)
    assert all(mm.nonfinite == 0 and mm.count == 20 and bool(torch.isfinite(mm.mean).all()) for mm in m.values())


def test_gradient_moments_against_numpy_and_non_finite_draws_counted():
    """Welford's running mean and variances equal NumPy's on the finite draws; a draw with a NaN
    or an infinity is left out, counted in ``nonfinite_draws``, and every draw is accounted for."""
    import numpy as np

    from pyrovae.inference.gradients import GradientMoments

    rng = np.random.default_rng(0)
    draws = rng.normal(2.0, 3.0, (30, 4))
    u = np.array([0.6, 0.8, 0.0, 0.0])
    m = GradientMoments(4, directions={"u": torch.tensor(u)})
    for i, g in enumerate(draws):
        m.add(torch.tensor(g))
        if i == 10:
            m.add(torch.tensor([1.0, float("nan"), 0.0, 0.0], dtype=torch.float64))
            m.add(torch.tensor([float("inf"), 0.0, 0.0, 0.0], dtype=torch.float64))
    summary = m.summary()
    assert summary["num_draws"] == 30 and summary["nonfinite_draws"] == 2
    assert np.allclose(m.mean.numpy(), draws.mean(0), rtol=1e-12)
    assert np.allclose(m.variances.numpy(), draws.var(0, ddof=1), rtol=1e-10)
    assert summary["variance"] == pytest.approx(draws.var(0, ddof=1).sum(), rel=1e-10)
    assert summary["snr"] == pytest.approx(np.linalg.norm(draws.mean(0)) / math.sqrt(draws.var(0, ddof=1).sum()))
    mean, var = m.projection("u")
    assert mean == pytest.approx(float((draws @ u).mean())) and var == pytest.approx(float((draws @ u).var(ddof=1)))


def test_lineups_and_names():
    ppca = make_ppca()
    assert lineup(ppca.model) == ("trace", "meanfield", "stl", "score", "score+baseline", "iwae-5", "iwae-dreg-5",
                                  "iwae-stl-5", "iwae-50", "iwae-dreg-50")
    model, _, _ = make_categorical()
    assert lineup(model, (1.0, 0.25)) == ("enum", "tracegraph", "tracegraph+baseline", "vimco-5", "relaxed-1",
                                          "relaxed-0.25")
    assert estimator("relaxed-0.25").temperature == 0.25
    with pytest.raises(ConfigError, match="relaxed-T"):
        estimator("relaxed-warm")
    with pytest.raises(UnknownNameError) as err:
        estimator("reinforce")
    assert all(name in str(err.value) for name in ESTIMATORS)


def test_score_function_messenger_detaches_samples(ppca_off_posterior):
    ppca, guide = ppca_off_posterior
    trace = pyro.poutine.trace(estimator("score").wrap_guide(guide)).get_trace(ppca.x)
    site = trace.nodes["z"]
    assert not site["fn"].has_rsample and not site["value"].requires_grad
    assert "baseline" not in site["infer"]
    trace = pyro.poutine.trace(estimator("score+baseline").wrap_guide(guide)).get_trace(ppca.x)
    assert trace.nodes["z"]["infer"]["baseline"]["use_decaying_avg_baseline"]


SMALL = dict(num_draws=4, warmup=1, batch_size=10)


def test_compare_estimators_on_m2_covers_the_discrete_lineup(tmp_path):
    config = TrainConfig(model="m2", hidden=(16,), latent_dim=4)
    result = compare_estimators(config=config, out=str(tmp_path), temperatures=(1.0, 0.5), train_seconds=0.3,
                                progress=False, **SMALL)
    r = json.loads(open(result.path).read())
    assert list(r["estimators"]) == ["enum", "tracegraph", "tracegraph+baseline", "vimco-5", "relaxed-1", "relaxed-0.5"]
    for e in r["estimators"].values():
        assert e["seconds_per_gradient"] > 0
        assert set(e["groups"]) == {"encoder", "decoder"}
        assert e["groups"]["encoder"]["variance"] > 0 and e["groups"]["encoder"]["num_draws"] == 4
    checked = {(c["estimator"], c["group"]) for c in r["bias_checks"]}
    assert ("tracegraph", "encoder") in checked and ("relaxed-0.5", "decoder") in checked
    assert all("relative_bias" in c for c in r["bias_checks"] if c["estimator"].startswith("relaxed"))
    assert set(r["training"]["curves"]) == set(r["estimators"])
    assert all(c["steps"] > 0 and len(c["seconds"]) == len(c["valid_elbo"]) >= 2 for c in r["training"]["curves"].values())
    assert [os.path.basename(f) for f in result.figures] == ["estimator_variance.png", "estimator_training.png"]
    assert all(os.path.getsize(f) > 0 for f in result.figures)


def test_compare_estimators_on_a_saved_run_and_its_errors(tmp_path, tiny_run):
    trained_run = str(tiny_run(2))
    result = compare_estimators(trained_run, estimators=["trace", "score", "iwae-5", "enum"], progress=False,
                                **SMALL)
    r = result.report
    assert list(r["estimators"]) == ["trace", "score", "iwae-5"]
    assert "has none that can be enumerated" in r["skipped"]["enum"]
    assert r["references"] == {"elbo": "trace", "iwae-5": "iwae-5"}
    assert r["estimators"]["score"]["groups"]["encoder"]["variance_reference"] == "trace"
    assert result.path == os.path.join(trained_run, "compare_estimators.json")
    with pytest.raises(CheckpointError, match="--overwrite"):
        compare_estimators(trained_run, out=trained_run, progress=False, **SMALL)
    with pytest.raises(ConfigError, match="not both"):
        compare_estimators(trained_run, config=TrainConfig(), progress=False, **SMALL)
    with pytest.raises(ConfigError, match="needs --out"):
        compare_estimators(config=TrainConfig(), progress=False, **SMALL)
    with pytest.raises(ConfigError, match="no estimator applies"):
        compare_estimators(trained_run, estimators=["enum"], out=str(tmp_path / "x"), progress=False,
                           **SMALL)


@pytest.mark.parametrize("name", [*ESTIMATORS, "relaxed-0.5"])
def test_every_registered_estimator_gives_finite_gradients(name):
    """A new ESTIMATORS entry is covered here: on the continuous and the discrete closed-form
    model, wherever build_elbo accepts it, its gradient draws are finite and move the parameters."""
    ppca = make_ppca(num_data=6)
    cat_model, cat_guide, cat_x = make_categorical()
    applied = 0
    for model, guide, x in ((ppca.model, ppca.guide_at(0.3), ppca.x), (cat_model, cat_guide, cat_x)):
        try:
            build_elbo(estimator(name).configure(TrainConfig()), model)
        except ConfigError:
            continue
        applied += 1
        for group, m in _draws(name, model, guide, x, 5).items():
            assert m.count == 5 and m.nonfinite == 0, group
            assert float(m.mean.norm()) > 0, group
    assert applied, f"{name} applies to neither model"


def test_command_line_prints_the_table(tmp_path, capsys):
    from pyrovae.cli import main

    code = main(["compare-estimators", "--model", "m2", "--hidden", "16", "--latent-dim", "3", "--num-draws", "3",
                 "--warmup", "0", "--batch-size", "5", "--temperatures", "1", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    for name in ("enum", "tracegraph+baseline", "relaxed-1", "var ratio: variance / variance of enum", "bias check"):
        assert name in out, name
    assert main(["compare-estimators", "--model", "m2", "--out", str(tmp_path)]) == 2  # report exists: no overwrite
    assert "--overwrite" in capsys.readouterr().err
