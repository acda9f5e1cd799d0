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


def test_full_covariance_and_low_rank_guides_against_scipy():
    """log q(z | x) of both correlated guides equals SciPy's multivariate normal density at the
    guide's mean and covariance; the low-rank guide's covariance is diag(d) + W W^T with W of the
    rank asked for (--guide-options rank=2, D = 5)."""
    from scipy.stats import multivariate_normal

    x = torch.bernoulli(torch.full((4, P), 0.5), generator=torch.Generator().manual_seed(1))
    for name, options in (("full-covariance", {}), ("low-rank", {"rank": 2})):
        torch.manual_seed(0)
        _, guide = build_model_and_guide(TrainConfig(guide=name, latent_dim=5, hidden=(8,), guide_options=options),
                                         P, 20)
        with torch.no_grad():
            q = guide.distribution(x)
            z = q.sample((3,))  # (3, 4, 5)
            ours = q.log_prob(z).double()
            loc, cov = q.mean.double(), q.covariance_matrix.double()
        assert cov.shape == (4, 5, 5)
        for i in range(4):
            expected = multivariate_normal(loc[i].numpy(), cov[i].numpy()).logpdf(z[:, i].double().numpy())
            assert torch.allclose(ours[:, i], torch.as_tensor(expected), atol=1e-4), name
        off_diagonal = cov - torch.diag_embed(cov.diagonal(dim1=-2, dim2=-1))
        assert off_diagonal.abs().max() > 1e-3, name  # correlated, unlike the diagonal guide
        if name == "low-rank":
            # float32 entries: singular values below 1e-5 of the largest are rounding
            low_rank_part = cov - torch.diag_embed(q.cov_diag.double())
            assert torch.linalg.matrix_rank(low_rank_part, rtol=1e-5).tolist() == [2] * 4
            assert q.cov_factor.shape == (4, 5, 2)


def test_iaf_density_against_the_change_of_variables():
    """log q(z | x) of the IAF guide equals log N(z_0; mu, sigma) - log |det dz/dz_0|, the
    Jacobian of the whole flow taken by autograd (not the transforms' own log-determinants),
    both for the guide's own sample (Pyro's cached inverse) and for a copy (computed inverse)."""
    _, guide = _build("standard-normal", guide="iaf")
    x = torch.bernoulli(torch.full((3, P), 0.5), generator=torch.Generator().manual_seed(2))
    q = guide.distribution(x)
    z0 = q.base_dist.sample((2,))  # (2, 3, D)

    def flow(u):  # z_0 -> z for all datapoints at once
        for t in q.transforms:
            u = t(u)
        return u

    z = flow(z0)
    cached = q.log_prob(z).detach()
    recomputed = q.log_prob(z.detach().clone()).detach()
    assert cached.shape == (2, 3)
    for s in range(2):
        for i in range(3):
            # the flow is autoregressive within a datapoint: datapoint i's block of the Jacobian
            jac = torch.autograd.functional.jacobian(lambda u: flow(u)[i], z0[s])[:, i, :]  # (D, D)
            expected = dist.Normal(q.base_dist.base_dist.loc[i], q.base_dist.base_dist.scale[i]).log_prob(
                z0[s, i]).sum().detach() - torch.linalg.slogdet(jac.detach())[1]
            assert float(cached[s, i]) == pytest.approx(float(expected), abs=1e-4)
            assert float(recomputed[s, i]) == pytest.approx(float(expected), abs=1e-4)
