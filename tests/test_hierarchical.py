"""The two-stochastic-layer VAE against a linear-Gaussian instance, where p(x) is Gaussian in
closed form: z2 ~ N(0, I), z1 = A z2 + a + s * e1, x = C z1 + c + sigma * e2, so
x ~ N(C a + c, C (A A^T + diag s^2) C^T + sigma^2 I)."""

import pytest
import torch
from pyro import poutine
from torch.distributions import MultivariateNormal

from pyrovae.build import build_elbo, build_model_and_guide
from pyrovae.config import TrainConfig
from pyrovae.errors import ConfigError
from pyrovae.inference.guides.hierarchical import HierarchicalGuide
from pyrovae.inference.marginal import iwae
from pyrovae.models.hierarchical_vae import HierarchicalVAE, layer_widths
from pyrovae.models.likelihoods import GaussianLikelihood
from pyrovae.nets import inverse_softplus
from tests.stats import assert_mean_within

P, D, SIGMA = 3, 1, 0.5


def _set_layer(layer, weight, bias, scale):
    """A GaussianLayer with hidden=() as the affine map ``weight u + bias`` and constant ``scale``."""
    out = layer.outputs
    with torch.no_grad():
        lin = layer.net[0]
        lin.weight.zero_()
        lin.weight[:out] = weight
        lin.bias[:out] = bias
        lin.bias[out:] = inverse_softplus(scale - layer.min_scale)


def _linear_gaussian():
    gen = torch.Generator().manual_seed(0)
    model = HierarchicalVAE(None, GaussianLikelihood(P, scale=SIGMA), latent_dim=D, hidden=())
    bottom = model.bottom_dim
    A, a = torch.randn(bottom, D, generator=gen), torch.randn(bottom, generator=gen) * 0.3
    s = torch.tensor([0.6, 0.9])
    C, c = torch.randn(P, bottom, generator=gen), torch.randn(P, generator=gen) * 0.3
    _set_layer(model.conditional, A, a, s)
    with torch.no_grad():
        model.x_decoder[0].weight.copy_(C)
        model.x_decoder[0].bias.copy_(c)
    cov = C @ (A @ A.T + torch.diag(s**2)) @ C.T + SIGMA**2 * torch.eye(P)
    return model, MultivariateNormal(C @ a + c, cov), (A, a, s, C, c)


def _broad_guide(model):
    guide = HierarchicalGuide(model, hidden=())
    _set_layer(guide.bottom, torch.zeros(model.bottom_dim, P), torch.zeros(model.bottom_dim), torch.full((2,), 1.5))
    _set_layer(guide.top, torch.zeros(D, model.bottom_dim), torch.zeros(D), torch.full((D,), 1.5))
    return guide


def test_layer_widths_follow_burda_et_al():
    assert layer_widths(50, (200, 200)) == (100, (100, 100))


def test_model_and_guide_densities_are_the_hand_written_ones():
    torch.manual_seed(0)
    model, _, (A, a, s, C, c) = _linear_gaussian()
    guide = _broad_guide(model)
    x = torch.randn(4, P)
    guide_trace = poutine.trace(guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    z1, z2 = guide_trace.nodes["z1"]["value"], guide_trace.nodes["z2"]["value"]
    normal = torch.distributions.Normal
    log_p = (normal(0.0, 1.0).log_prob(z2).sum(-1) + normal(z2 @ A.T + a, s).log_prob(z1).sum(-1)
             + normal(z1 @ C.T + c, SIGMA).log_prob(x).sum(-1))
    log_q = normal(0.0, 1.5).log_prob(z1).sum(-1) + normal(0.0, 1.5).log_prob(z2).sum(-1)
    for trace, expected in ((model_trace, log_p), (guide_trace, log_q)):
        trace.compute_log_prob()
        total = sum(site["log_prob"] for site in trace.nodes.values()
                    if site["type"] == "sample" and site["name"] != "data")
        torch.testing.assert_close(total, expected)


def _near_posterior_guide(model, A, a, s, C, c):
    """q(z1 | x): the exact p(z1 | x)'s mean and marginal scales (x 1.2); q(z2 | z1) = p(z2 | z1)."""
    guide = HierarchicalGuide(model, hidden=())
    sigma1 = A @ A.T + torch.diag(s**2)  # Cov(z1)
    post = torch.linalg.inv(torch.linalg.inv(sigma1) + C.T @ C / SIGMA**2)
    _set_layer(guide.bottom, post @ C.T / SIGMA**2, post @ (torch.linalg.solve(sigma1, a) - C.T @ c / SIGMA**2),
               1.2 * post.diagonal().sqrt())
    v = torch.linalg.inv(torch.eye(D) + A.T @ torch.diag(s**-2) @ A)  # Cov(z2 | z1)
    m = v @ A.T @ torch.diag(s**-2)
    _set_layer(guide.top, m, -m @ a, v.diagonal().sqrt())
    return guide


def test_iwae_converges_to_the_exact_log_marginal():
    torch.manual_seed(1)
    model, marginal, params = _linear_gaussian()
    x = marginal.sample((5,))
    exact = marginal.log_prob(x)
    guide = _near_posterior_guide(model, *params)
    # 10 independent estimates at K = 5000: their mean within 5 standard errors computed from
    # them (IWAE's O(1/K) bias is far below that), and the standard error small (power)
    results = [iwae(model, guide, x, num_samples=5000, batch_size=5) for _ in range(10)]
    se = assert_mean_within(torch.stack([r.log_likelihood for r in results]), exact)  # (10, 5) estimates
    assert se.max() < 0.01
    assert all((r.elbo.float() < exact).all() for r in results)
    assert set(results[0].posterior_mean) == {"z1", "z2"}


def test_meanfield_is_refused_and_trace_builds():
    config = TrainConfig(model="hvae", elbo="meanfield", latent_dim=2, hidden=[4])
    model, guide = build_model_and_guide(config, P, 10)
    with pytest.raises(ConfigError, match="guide draws one site given another"):
        build_elbo(config, model)
    build_elbo(TrainConfig(model="hvae", elbo="trace", latent_dim=2, hidden=[4]), model)
