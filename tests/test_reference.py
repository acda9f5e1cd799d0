"""The benchmark's hand-written references compute what pyrovae's Pyro model/guide pairs compute:
with the same weights, the same expected loss and the same IWAE log-likelihood (within Monte
Carlo error), so their timings compare like with like."""

import torch
from pyrovae.inference.elbos import make_elbo
from pyrovae.inference.marginal import iwae

from pyrovae.analysis.reference import ReferenceM2, ReferenceVAE, reference_iwae
from pyrovae.build import build_model_and_guide
from pyrovae.config import TrainConfig

P, D, H, N = 6, 2, 5, 40


def _mean_and_stderr(draws):
    draws = torch.as_tensor(draws).double()
    return draws.mean(), draws.std() / len(draws) ** 0.5


def _assert_same_expectation(ours, theirs):
    """Two sets of independent loss draws have the same mean: within 5 standard errors of the
    difference, computed from the draws, and that standard error below 0.2 % of the loss, so a 1 % difference shows (power)."""
    (a, se_a), (b, se_b) = _mean_and_stderr(ours), _mean_and_stderr(theirs)
    se = (se_a**2 + se_b**2).sqrt()
    assert abs(a - b) < 5 * se, (a, b, se)
    assert 0 < se < 0.002 * abs(a)


def _vae_pair():
    torch.manual_seed(0)
    model, guide = build_model_and_guide(TrainConfig(latent_dim=D, hidden=[H]), P, N)
    reference = ReferenceVAE(P, D, (H,))
    reference.encoder.load_state_dict(guide.encoder.state_dict())
    reference.decoder.load_state_dict(model.decoder.state_dict())
    x = torch.bernoulli(torch.full((8, P), 0.4), generator=torch.Generator().manual_seed(1))
    return model, guide, reference, x


def test_reference_vae_loss_has_pyros_expectation():
    model, guide, reference, x = _vae_pair()
    idx = torch.arange(8)
    with torch.no_grad():
        elbo = make_elbo("trace", num_particles=200)
        ours = [elbo.loss(model, guide, x, idx, N) for _ in range(40)]  # 40 draws of 200 particles
        theirs = [reference(x, N) for _ in range(4000)]
    _assert_same_expectation(ours, theirs)


def test_reference_iwae_equals_pyrovae_iwae_on_the_same_draws():
    """Both draw z = loc + scale * eps with eps from the same RNG stream in the same chunks, so
    with one seed they compute the same per-datapoint estimate, to float rounding."""
    model, guide, reference, x = _vae_pair()
    torch.manual_seed(2)
    ours = iwae(model, guide, x, num_samples=5000, batch_size=8).log_likelihood
    torch.manual_seed(2)
    theirs = reference_iwae(reference, x, 5000, batch_size=8)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    torch.manual_seed(3)
    assert not torch.allclose(reference_iwae(reference, x, 5000, batch_size=8), ours, atol=1e-5, rtol=0)


def test_reference_m2_loss_has_pyros_expectation():
    torch.manual_seed(0)
    config = TrainConfig(model="m2", elbo="enum", latent_dim=D, hidden=[H], num_classes=3)
    model, guide = build_model_and_guide(config, P, N)
    reference = ReferenceM2(P, D, (H,), num_classes=3)
    for name in ("classifier", "encoder"):
        getattr(reference, name).load_state_dict(getattr(guide, name).state_dict())
    reference.decoder.load_state_dict(model.decoder.state_dict())
    x = torch.bernoulli(torch.full((8, P), 0.4), generator=torch.Generator().manual_seed(1))
    idx = torch.arange(8)
    with torch.no_grad():
        elbo = make_elbo("enum", num_particles=100)
        ours = [elbo.loss(model, guide, x, idx, N) for _ in range(40)]  # 40 draws of 100 particles
        theirs = [reference(x, N) for _ in range(4000)]
    _assert_same_expectation(ours, theirs)
