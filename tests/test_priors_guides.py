"""The priors and variational families of models/priors and inference/guides against direct formulas."""

import pytest
import torch
from pyro import distributions as dist

from pyrovae.build import build_model_and_guide
from pyrovae.config import TrainConfig
from pyrovae.errors import ConfigError
from pyrovae.models.priors.diagonal_mixture import diagonal_mixture

P, D = 12, 3


def test_diagonal_mixture_matches_mixture_same_family():
    torch.manual_seed(0)
    logits, loc, scale = torch.randn(7).double(), torch.randn(7, D).double(), torch.rand(7, D).double() + 0.2
    z = torch.randn(4, 5, D).double()
    expected = dist.MixtureSameFamily(dist.Categorical(logits=logits), dist.Normal(loc, scale).to_event(1)).log_prob(z)
    mixture = diagonal_mixture(logits, loc, scale)
    assert torch.allclose(mixture.log_prob(z), expected, atol=1e-10)
    expanded = mixture.expand([5])  # as a data plate broadcasts it
    assert expanded.batch_shape == (5,)
    assert torch.allclose(expanded.log_prob(z), expected, atol=1e-10)


def _build(prior, guide="amortized"):
    torch.manual_seed(0)
    return build_model_and_guide(TrainConfig(prior=prior, guide=guide, latent_dim=D, hidden=(8,)), P, 20)


def test_vamp_prior_is_the_mean_of_the_encoders_posteriors():
    model, guide = _build("vamp")
    model.initialize_from_data(torch.bernoulli(torch.full((20, P), 0.5)))
    u = model.prior.pseudo_inputs.clamp(0, 1)
    loc, scale = guide.encode(u)  # (K, D)
    z = torch.randn(6, D)
    direct = dist.Normal(loc, scale).to_event(1).log_prob(z.unsqueeze(-2)).logsumexp(-1) - torch.log(torch.tensor(float(model.prior.num_components)))
    assert torch.allclose(model.prior().log_prob(z), direct, atol=1e-4)
    # the pseudo-inputs are the prior's parameters; the encoder is not duplicated in the model's state
    keys = model.state_dict().keys()
    assert "prior.pseudo_inputs" in keys and not any("encoder" in k for k in keys)
    # the prior's gradient reaches the encoder
    model.prior().log_prob(z).sum().backward()
    assert guide.encoder[0].weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="no encoder"):
        _build("vamp", guide="per-example")


def test_flow_prior_density_is_the_change_of_variables():
    model, _ = _build("flow")
    prior = model.prior()
    z = torch.randn(D)
    # u = f(z) is the inverse of the prior's transform; log p(z) = log N(f(z)) + log |det df/dz|
    f = prior.transforms[0].inv
    jac = torch.autograd.functional.jacobian(f, z)
    expected = dist.Normal(0.0, 1.0).log_prob(f(z)).sum() + torch.linalg.slogdet(jac)[1]
    assert float(prior.log_prob(z).detach()) == pytest.approx(float(expected.detach()), abs=1e-4)
    assert prior.sample((4,)).shape == (4, D)


def test_full_covariance_and_low_rank_guides_are_valid_gaussians():
    x = torch.bernoulli(torch.full((5, P), 0.5))
    for name in ("full-covariance", "low-rank"):
        _, guide = _build("standard-normal", guide=name)
        q = guide.distribution(x)
        cov = q.covariance_matrix
        assert cov.shape == (5, D, D)
        assert torch.allclose(cov, cov.transpose(-1, -2)) and (torch.linalg.eigvalsh(cov) > 0).all()
        off = cov - torch.diag_embed(cov.diagonal(dim1=-2, dim2=-1))
        assert off.abs().sum() > 0  # correlated, unlike the diagonal guide


def test_iaf_density_of_its_own_sample_matches_the_inverse():
    """The cached inverse (one pass) and the computed inverse (D passes) give the same log q(z|x)."""
    _, guide = _build("standard-normal", guide="iaf")
    x = torch.bernoulli(torch.full((5, P), 0.5))
    q = guide.distribution(x)
    z = q.rsample(torch.Size([4]))
    cached = q.log_prob(z)
    recomputed = q.log_prob(z.detach().clone())
    assert cached.shape == (4, 5)
    assert torch.allclose(cached, recomputed, atol=1e-4)
