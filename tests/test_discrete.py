"""Discrete latents against exact sums: one 3-way latent y, a linear decoder and 4 binary pixels,
so log p(x), the ELBO and its gradient are finite sums over y computed by hand."""

import math

import pyro
import pytest
import torch
from pyro.infer import TraceGraph_ELBO

from tests.exact import categorical_exact_terms, make_categorical
from tests.stats import assert_mean_within
from pyrovae.inference.elbos import loss_and_grads, make_elbo
from pyrovae.inference.marginal import iwae
from pyrovae.inference.relax import Relaxed_ELBO
from pyrovae.models.likelihoods import BernoulliLikelihood
from pyrovae.models.mixture_vae import MixtureVAE
from pyrovae.models.priors.mixture import MixtureOfGaussians

P, B = 4, 5


@pytest.fixture
def small():
    return make_categorical()


def _params(model, guide):
    return [*model.decoder.parameters(), *guide.encoder.parameters()]


def test_enum_loss_equals_the_exact_sum(small):
    model, guide, x = small
    elbo, _ = categorical_exact_terms(model, guide, x)
    loss = make_elbo("enum", max_plate_nesting=1).loss(model, guide, x)
    assert loss == pytest.approx(-float(elbo.detach().sum()), rel=1e-5)


def test_evaluator_sums_enumerable_latents_exactly(small):
    model, guide, x = small
    elbo, log_px = categorical_exact_terms(model, guide, x)
    result = iwae(model, guide, x, num_samples=3)
    # nothing is sampled: every "sample" is the exact sum, for log p(x) and for the ELBO
    assert torch.allclose(result.log_likelihood.float(), log_px.detach(), atol=1e-5)
    assert torch.allclose(result.elbo.float(), elbo.detach(), atol=1e-5)
    assert torch.allclose(result.ess, torch.full((B,), 3.0, dtype=result.ess.dtype), atol=1e-4)


def test_evaluator_samples_when_not_enumerable(small):
    model, guide, x = small
    _, log_px = categorical_exact_terms(model, guide, x)
    model.enumerable = False  # sampled from the guide: IWAE converges to log p(x)
    # 8 independent estimates at K = 2500; IWAE's bias is O(1/K) (here below 1e-3 nats, as
    # E[w^2] / E[w]^2 <= 1 / min_y q(y | x) for one 3-way latent), far below the standard error
    estimates = []
    for r in range(8):
        torch.manual_seed(10 + r)
        result = iwae(model, guide, x, num_samples=2500)
        assert (result.ess < 2500).all()  # the weights are not all equal: it sampled
        estimates.append(result.log_likelihood.double())
    se = assert_mean_within(torch.stack(estimates), log_px.detach())  # (R, B) estimates
    assert se.max() < 0.05  # power: resolves a 0.25-nat error


def _exact_gradient(model, guide, x):
    elbo, _ = categorical_exact_terms(model, guide, x)
    return torch.cat([g.flatten() for g in torch.autograd.grad(-elbo.sum(), _params(model, guide))])


def _estimated_gradients(elbo, model, guide, x, repeats):
    grads = []
    for _ in range(repeats):
        for p in [*model.parameters(), *guide.parameters()]:
            p.grad = None
        loss_and_grads(elbo, model, guide, x)
        grads.append(torch.cat([p.grad.flatten() for p in _params(model, guide)]))
    return torch.stack(grads)


def test_score_function_gradient_is_unbiased(small):
    model, guide, x = small
    exact = _exact_gradient(model, guide, x)
    torch.manual_seed(2)
    pyro.clear_param_store()
    elbo = TraceGraph_ELBO(num_particles=2000, vectorize_particles=True, max_plate_nesting=1)
    grads = _estimated_gradients(elbo, model, guide, x, repeats=20)
    z = (grads.mean(0) - exact) / (grads.std(0) / math.sqrt(len(grads)) + 1e-6)
    assert z.abs().max() < 5, z  # every coordinate within 5 standard errors
    # and the estimate moved: it is not a zero gradient
    assert (grads.mean(0) - exact).norm() < 0.2 * exact.norm()


def test_relaxed_gradient_bias_shrinks_with_temperature(small):
    model, guide, x = small
    exact = _exact_gradient(model, guide, x)
    bias, se = {}, {}
    for tau in (2.0, 0.7, 0.3):
        torch.manual_seed(3)
        elbo = Relaxed_ELBO(temperature=tau, temperature_min=tau, num_particles=2000, vectorize_particles=True,
                            max_plate_nesting=1)
        grads = _estimated_gradients(elbo, model, guide, x, repeats=10)  # 10 independent draws
        bias[tau] = float((grads.mean(0) - exact).norm())
        # | ||mean - exact|| - ||bias|| | <= ||mean - E[mean]||, whose size is the norm of the
        # coordinate-wise standard errors
        se[tau] = float((grads.std(0) / math.sqrt(len(grads))).norm())
    for hot, cold in ((2.0, 0.7), (0.7, 0.3)):
        assert bias[cold] + 5 * (se[cold] + se[hot]) < bias[hot], (bias, se)


def test_relax_leaves_observed_and_continuous_sites_alone():
    from pyrovae.inference.relax import relax
    import pyro.poutine as poutine
    import pyro.distributions as dist

    def fn():
        pyro.sample("b", dist.Bernoulli(logits=torch.zeros(3)).to_event(1))
        pyro.sample("o", dist.Bernoulli(logits=torch.zeros(3)).to_event(1), obs=torch.ones(3))
        pyro.sample("n", dist.Normal(0.0, 1.0))

    trace = poutine.trace(relax(fn, 0.5)).get_trace()
    assert isinstance(trace.nodes["b"]["fn"].base_dist, dist.RelaxedBernoulli)
    assert type(trace.nodes["o"]["fn"].base_dist) is dist.Bernoulli
    assert type(trace.nodes["n"]["fn"]) is dist.Normal
    with pytest.raises(ValueError, match="positive"):
        relax(fn, 0.0)


def test_mixture_prior_weights_sum_the_component_out():
    """The evaluator's log weight for the mixture-prior VAE is log sum_c p(c) p(z|c) p(x|z) - log q(z)."""
    torch.manual_seed(4)
    D = 2
    model = MixtureVAE(MixtureOfGaussians(D, 3), BernoulliLikelihood(P), D, hidden=())
    from pyrovae.inference.guides.amortized import AmortizedGuide
    from pyrovae.inference.marginal import particle_traces, log_weights

    guide = AmortizedGuide(model, hidden=())
    x = torch.bernoulli(torch.full((B, P), 0.5))
    torch.manual_seed(5)
    log_w, elbo, _, _ = log_weights(model, guide, x, 7)
    torch.manual_seed(5)
    guide_trace, _ = particle_traces(model, guide, x, 7)
    z = guide_trace.nodes["z"]["value"]  # (7, B, D)
    with torch.no_grad():
        expected = (model.prior().log_prob(z) + model.likelihood(model.decoder(z)).log_prob(x)
                    - guide_trace.nodes["z"]["fn"].log_prob(z))
    assert torch.allclose(log_w, expected, atol=1e-4)
    assert torch.allclose(elbo, expected, atol=1e-4)  # no guide-side enumeration: ELBO term = log weight


def test_posterior_mean_downstream_of_an_enumerated_class_is_the_mixture_mean():
    """M2 under enumeration: E_q[z|x] = sum_y q(y|x) loc(x, y), the mean of q's mixture over y."""
    from torch.nn import functional as F

    from pyrovae.build import build_model_and_guide
    from pyrovae.config import TrainConfig
    from pyrovae.inference.marginal import log_weights

    torch.manual_seed(0)
    config = TrainConfig(model="m2", elbo="enum", latent_dim=3, hidden=[8], num_classes=4)
    model, guide = build_model_and_guide(config, 6, 20)
    x = torch.bernoulli(torch.full((5, 6), 0.5))
    means = log_weights(model, guide, x, 3)[3]
    qy = guide.classify(x).softmax(-1)  # (B, C)
    locs = torch.stack([guide.encoder(torch.cat([x, F.one_hot(torch.full((5,), c), 4).float()], -1))[:, :3]
                        for c in range(4)], 1)  # (B, C, D)
    assert means["y"] is None
    torch.testing.assert_close(means["z"], (qy.unsqueeze(-1) * locs).sum(1))


def test_m2_run_reports_accuracy_and_the_labels_only_baseline_beside_it(tmp_path, capsys):
    """The baseline is not part of the evaluation: ``pyrovae evaluate`` reports q(y | x)'s accuracy alone."""
    import json

    from pyrovae import cli

    out = tmp_path / "m2"
    assert cli.main(["train", "--model", "m2", "--elbo", "enum", "--hidden", "8", "--latent-dim", "2", "--epochs", "1",
                     "--eval-num-samples", "5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "test accuracy of q(y | x)" in printed and "the same classifier trained on the 100 labels alone" in printed
    baseline = json.loads((out / "baseline_labelled_only.json").read_text())
    assert baseline["num_labels"] == 100 and 0 <= baseline["accuracy_labelled_only"] <= 1
    assert cli.main(["evaluate", str(out), "--num-samples", "5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert 0 <= report["accuracy"] <= 1 and "accuracy_labelled_only" not in report
