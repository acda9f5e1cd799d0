"""pyrovae's modules under stock Pyro, in Pyro's default (global parameter store) mode: importing
pyrovae changes no setting, SVI + pyro.optim, ELBOModule + torch.optim, Predictive and poutine
work with models and guides however they are built."""

import subprocess
import sys

import pyro
import pytest
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyrovae.inference import GUIDES
from pyrovae.inference.guides import guides_for
from pyrovae.models import LIKELIHOODS, MODELS, PRIORS, VAE
from torch import nn

from pyrovae.build import build_model_and_guide
from pyrovae.config import TrainConfig

P, D, B = 12, 3, 40

REGRESSION = """
import pyro, torch
import pyro.distributions as dist
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
{preamble}
torch.manual_seed(0)
X = torch.randn(200, 3)
w_true = torch.tensor([1.5, -2.0, 0.5])
y = X @ w_true + 0.1 * torch.randn(200)

def model(X, y=None):
    w = pyro.sample("w", dist.Normal(0.0, 10.0).expand([3]).to_event(1))
    with pyro.plate("n", len(X)):
        pyro.sample("y", dist.Normal(X @ w, 0.1), obs=y)

guide = AutoNormal(model)
svi = SVI(model, guide, pyro.optim.Adam({{"lr": 0.05}}), Trace_ELBO())
for _ in range(1000):
    svi.step(X, y)
print(pyro.settings.get("module_local_params"), *guide.median()["w"].tolist())
"""


@pytest.mark.parametrize("preamble", ["", "import pyrovae, pyrovae.runs.train, pyrovae.cli"])
def test_bayesian_linear_regression_with_autonormal_recovers_its_weights(preamble):
    """In a fresh process, with and without importing pyrovae: the same numbers."""
    out = subprocess.run([sys.executable, "-c", REGRESSION.format(preamble=preamble)], capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[0] == "False"  # Pyro's default setting, untouched by the import
    assert [float(v) for v in out[1:]] == pytest.approx([1.5, -2.0, 0.5], abs=0.05)


def _direct_vae(decoder=None):
    """The README's script model, built directly (no builder)."""
    model = VAE(PRIORS["standard-normal"](D), LIKELIHOODS["bernoulli"](P), D, hidden=(16,), decoder=decoder)
    return model, GUIDES["amortized"](model, hidden=(16,))


def _data():
    gen = torch.Generator().manual_seed(0)
    return torch.bernoulli(torch.rand(B, P, generator=gen).pow(3), generator=gen)


def _svi_losses(model, guide, steps=150):
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    x = _data()
    return [svi.step(x) for _ in range(steps)]


def _built(guide="amortized", **options):
    config = TrainConfig(guide=guide, latent_dim=D, hidden=(16,), **options)
    return build_model_and_guide(config, P, B)


@pytest.mark.parametrize("build", ["direct", "builder", "iaf", "plain-decoder", "per-example-dense"])
def test_stock_svi_with_pyro_optim_trains_pyrovae_models(build):
    torch.manual_seed(0)
    if build == "direct":
        model, guide = _direct_vae()
    elif build == "plain-decoder":  # a plain nn.Module, not a PyroModule
        model, guide = _direct_vae(decoder=nn.Sequential(nn.Linear(D, 16), nn.Tanh(), nn.Linear(16, P)))
    elif build == "per-example-dense":  # pyro.optim.Adam has no sparse updates: dense tables
        model, guide = _built("per-example", guide_options={"sparse": False})
    else:
        model, guide = _built("amortized" if build == "builder" else build)
    params = [p.detach().clone() for p in list(model.parameters()) + list(guide.parameters())]
    losses = _svi_losses(model, guide)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < first - 0.05 * abs(first), (first, last)
    moved = [not torch.equal(a, b) for a, b in zip(params, list(model.parameters()) + list(guide.parameters()))]
    assert all(moved)  # SVI reached every parameter, the decoder's included
    assert len(pyro.get_param_store()) == 0  # the parameters stayed in the modules
    assert pyro.settings.get("module_local_params") is False


def test_two_models_in_one_process_share_no_parameters_under_stock_svi():
    torch.manual_seed(0)
    a, b = _direct_vae(), _direct_vae()
    before = [p.detach().clone() for p in b[0].parameters()]
    _svi_losses(*a, steps=5)
    assert all(torch.equal(p, q) for p, q in zip(before, b[0].parameters()))


def test_a_deep_copy_trains_its_own_parameters_under_stock_svi():
    import copy

    torch.manual_seed(0)
    original = _direct_vae()
    _svi_losses(*original, steps=2)  # its parameters are marked for SVI
    copied = copy.deepcopy(original)
    before = [p.detach().clone() for p in original[0].parameters()]
    _svi_losses(*copied, steps=5)
    assert all(torch.equal(p, q) for p, q in zip(before, original[0].parameters()))
    assert not any(torch.equal(p, q) for p, q in zip(before, copied[0].parameters()))


def test_elbo_module_with_torch_optim_trains_in_pyro_default_mode():
    torch.manual_seed(0)
    model, guide = _direct_vae()
    loss_fn = Trace_ELBO()(model, guide)
    optimizer = torch.optim.Adam(loss_fn.parameters(), lr=1e-2)
    x = _data()
    losses = []
    for _ in range(150):
        optimizer.zero_grad()
        loss = loss_fn(x)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) < sum(losses[:10])


def test_posterior_predictive_gives_latents_of_shape_s_b_d():
    torch.manual_seed(0)
    model, guide = _direct_vae()
    x = _data()[:5]
    samples = Predictive(model, guide=guide, num_samples=7)(x)
    assert samples["z"].shape == (7, 5, D)
    # the draws are the guide's: their mean is the encoder's mean, within 4 standard errors
    loc, scale = guide.encode(x)
    many = Predictive(model, guide=guide, num_samples=400)(x)["z"]
    assert ((many.mean(0) - loc).abs() < 4 * scale / 20).all()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_prior_predictive_samples_have_the_data_shape(name):
    """``Predictive`` without a guide, and ``model.sample(n)``, on every model."""
    torch.manual_seed(0)
    guide = next(iter(sorted(guides_for(name))))
    config = TrainConfig(model=name, guide=guide, latent_dim=2, hidden=(8,), num_classes=3)
    model, _ = build_model_and_guide(config, P, B)
    samples = Predictive(model, num_samples=4)(None, num_data=6)
    assert samples["x"].shape == (4, 6, P)
    assert set(samples["x"].unique().tolist()) <= {0.0, 1.0}  # Bernoulli pixels
    assert model.sample(9).shape == (9, P)


def test_prior_predictive_pixels_follow_the_decoder():
    """With the decoder's output fixed at logit(0.2), sampled pixels are Bernoulli(0.2)."""
    torch.manual_seed(0)
    model, _ = _direct_vae(decoder=nn.Linear(D, P))
    with torch.no_grad():
        model.decoder.weight.zero_()
        model.decoder.bias.fill_(torch.logit(torch.tensor(0.2)).item())
    x = model.sample(2000)
    se = (0.2 * 0.8 / x.numel()) ** 0.5
    assert abs(x.mean().item() - 0.2) < 5 * se


def test_model_without_data_or_size_is_a_clear_error():
    from pyrovae.errors import ConfigError

    model, _ = _direct_vae()
    with pytest.raises(ConfigError, match="num_data"):
        model(None)


def test_poutine_handlers_see_the_model_sites():
    torch.manual_seed(0)
    model, guide = _direct_vae()
    x = _data()[:4]
    guide_trace = pyro.poutine.trace(guide).get_trace(x)
    model_trace = pyro.poutine.trace(pyro.poutine.replay(model, trace=guide_trace)).get_trace(x)
    assert torch.equal(model_trace.nodes["z"]["value"], guide_trace.nodes["z"]["value"])
    assert model_trace.nodes["x"]["is_observed"]
    conditioned = pyro.poutine.condition(model, data={"z": torch.zeros(4, D)})
    assert torch.equal(pyro.poutine.trace(conditioned).get_trace(x).nodes["z"]["value"], torch.zeros(4, D))


def test_the_setting_is_restored_after_a_failing_call():
    from pyrovae.errors import ConfigError

    model, _ = _direct_vae()
    with pytest.raises(ConfigError, match="idx"):
        model(_data()[:3], idx=torch.arange(2))  # one index too few
    assert pyro.settings.get("module_local_params") is False
    with pyro.settings.context(module_local_params=True):
        model(_data()[:2])
        assert pyro.settings.get("module_local_params") is True


def test_autoguide_on_a_pyrovae_model_fits_the_latents():
    """An AutoNormal guide with ``create_plates`` on the model's data plate: stock SVI fits it
    (the amortized encoder is replaced by per-datapoint parameters Pyro creates)."""
    torch.manual_seed(0)
    model, _ = _direct_vae()
    x = _data()
    guide = AutoNormal(model, create_plates=lambda *args, **kwargs: pyro.plate("data", len(x), dim=-1))
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 2e-2}), Trace_ELBO())
    losses = [svi.step(x) for _ in range(200)]
    assert sum(losses[-10:]) < sum(losses[:10])
    assert guide.locs.z.shape == (B, D)
