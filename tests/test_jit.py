"""``--jit``: Pyro's compiled ELBOs give the plain estimators' losses and gradients, exactly on the
same draws; at the exact posterior of probabilistic PCA the loss is -log p(x) with no noise;
compilation is per batch shape, leaves the global parameter store and the random state alone,
and falls back with a warning where tracing fails."""

import json
import math
import os
import warnings

import pyro
import pytest
import torch
from exact import make_ppca
from pyrovae.inference.elbos import loss_and_grads, make_elbo
from pyrovae.inference.guides import GUIDES, guides_for
from pyrovae.inference.jit import JitLoss
from pyrovae.models import PRIORS
from torch import nn

from pyrovae.build import build_elbo, build_model_and_guide
from pyrovae.config import TrainConfig
from pyrovae.errors import ConfigError
from pyrovae.nets import mlp, plain_mlp, traceable_params_
from pyrovae.runs.checkpoint import load_checkpoint
from pyrovae.runs.train import train
from pyrovae.training.objective import make_objective, unsupervised_loss

P, D, N = 12, 3, 20
# guides that cannot be traced although their parameters are traceable, and why
UNTRACEABLE_GUIDES = {"semi-amortized": "its refinement steps optimize new leaf tensors inside the guide"}


def _pair(elbo="trace", guide="amortized", prior="standard-normal"):
    config = TrainConfig(latent_dim=D, hidden=(8,), elbo=elbo, guide=guide, prior=prior)
    torch.manual_seed(0)
    model, guide = build_model_and_guide(config, P, N)
    model.initialize_from_data(torch.bernoulli(torch.full((N, P), 0.4)))
    return model, guide, build_elbo(config, model)


def _loss_and_grads(fn, model, guide, seed):
    """``fn()``'s loss and the dense gradients it leaves, starting from zero, on draws from ``seed``."""
    params = list(model.parameters()) + list(guide.parameters())
    for p in params:
        p.grad = None
    torch.manual_seed(seed)
    loss = fn()
    return loss, [torch.zeros_like(p) if p.grad is None else p.grad.to_dense().clone() for p in params]


def _assert_same(a, b):
    """Equal losses and gradients up to float32 rounding: the compiled graph may sum in another
    order, so each gradient may differ by 1e-5 of its largest entry (float32's epsilon is 1.2e-7)."""
    assert a[0] == pytest.approx(b[0], rel=1e-6)
    for ga, gb in zip(a[1], b[1]):
        assert (ga - gb).abs().max() <= 1e-5 * gb.abs().max() + 1e-7


def _builtin(table):
    """pyrovae's own entries of a registry (compiled and plain losses agree to float32 rounding
    within the tolerances of :func:`_assert_same` for these; the test plugins are not compiled
    by anything pyrovae promises)."""
    return sorted(name for name, cls in table.items() if cls.__module__.startswith("pyrovae."))


def _batch(size=5, seed=3):
    x = torch.bernoulli(torch.full((size, P), 0.4), generator=torch.Generator().manual_seed(seed))
    return x, torch.arange(size)


def _count_python_calls(module):
    """A list whose one entry counts the calls of ``module``'s Python ``forward``. A compiled
    graph replays the traced operations without calling it, so the count stays put on steps
    that ran a compiled graph."""
    calls = [0]
    module.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def _compiled_step_ran(jit, model, x, idx, seed):
    """Run one more step of ``jit``; whether it ran without calling the model's Python code."""
    calls = _count_python_calls(model)
    _loss_and_grads(lambda: jit(x, idx, N), model, jit.guide, seed)
    return calls[0] == 0


@pytest.mark.parametrize("guide", [g for g in _builtin(guides_for("vae")) if g not in UNTRACEABLE_GUIDES])
@pytest.mark.parametrize("elbo", ["trace", "meanfield"])
def test_jit_equals_the_plain_estimator_on_the_same_draws(elbo, guide):
    """Every registered guide of the VAE that can be traced (the others:
    :func:`test_jit_falls_back_with_one_warning_where_tracing_fails`): the loss compiles, a
    compiled graph runs the later steps (the model's Python code is not called), and the
    compiled loss and gradients, first call (which compiles) and later calls, equal the plain
    ELBO's on the same random draws."""
    model, guide_, plain = _pair(elbo, guide)
    jit = JitLoss(plain, model, guide_)
    x, idx = _batch()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback warning
        for seed in (1, 2):
            _assert_same(_loss_and_grads(lambda: jit(x, idx, N), model, guide_, seed),
                         _loss_and_grads(lambda: loss_and_grads(plain, model, guide_, x, idx, N), model, guide_, seed))
        assert _compiled_step_ran(jit, model, x, idx, 3)
    assert jit.fallback is None and len(jit.compiled) == 1


@pytest.mark.parametrize("prior", _builtin(PRIORS))
def test_jit_compiles_every_prior(prior):
    """Every prior compiles: parameters of plain nn.Modules (the flow's Pyro transforms) reach the
    compiled loss as inputs through their param sites (pyrovae.local.mark_unconstrained_)."""
    model, guide, plain = _pair(prior=prior)
    jit = JitLoss(plain, model, guide)
    x, idx = _batch()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _assert_same(_loss_and_grads(lambda: jit(x, idx, N), model, guide, 4),
                     _loss_and_grads(lambda: loss_and_grads(plain, model, guide, x, idx, N), model, guide, 4))
        assert _compiled_step_ran(jit, model, x, idx, 5)
        _assert_same(_loss_and_grads(lambda: jit(x, idx, N), model, guide, 6),
                     _loss_and_grads(lambda: loss_and_grads(plain, model, guide, x, idx, N), model, guide, 6))
    assert jit.fallback is None, jit.fallback
    assert len(caught) == 0


@pytest.mark.parametrize("elbo", ["trace", "meanfield"])
def test_jit_loss_at_the_exact_posterior_is_minus_log_marginal(elbo):
    """Probabilistic PCA with the guide at p(z|x): log p(x,z) - log q(z|x) = log p(x) for every
    z, so each compiled loss is exactly -N/B sum_i log p(x_i) (meanfield: the KL in closed form
    is KL(p(z|x) || p(z)), and the identity holds in expectation: the mean of R seeded draws is
    within 5 of its standard errors, computed from the draws, with a power check)."""
    torch.manual_seed(0)
    ppca = make_ppca()
    guide = ppca.guide_at()
    traceable_params_(ppca.model), traceable_params_(guide)
    x = ppca.x[:8]
    jit = JitLoss(make_elbo(elbo), ppca.model, guide)
    expected = -ppca.log_marginal(x).sum().item() * len(ppca.x) / len(x)
    draws = 3 if elbo == "trace" else 400
    losses = torch.tensor([jit(x, torch.arange(8), len(ppca.x)) for _ in range(draws)], dtype=torch.float64)
    assert jit.fallback is None
    if elbo == "trace":
        assert losses.tolist() == pytest.approx([expected] * 3, rel=1e-5)
    else:
        se = float(losses.std() / math.sqrt(draws))
        assert abs(float(losses.mean()) - expected) < 5 * se, (float(losses.mean()), expected, se)
        assert 0 < se < 0.01 * abs(expected)  # power: the check resolves a 5 % error


def test_jit_compiles_once_per_batch_shape_and_keeps_the_random_state():
    model, guide, plain = _pair()
    jit = JitLoss(plain, model, guide)
    torch.manual_seed(7)
    for size in (5, 5, 2, 5, 2):
        x, idx = _batch(size)
        jit(x, idx, N)
    after_jit = torch.rand(3)
    torch.manual_seed(7)
    for size in (5, 5, 2, 5, 2):
        x, idx = _batch(size)
        loss_and_grads(plain, model, guide, x, idx, N)
    assert torch.equal(after_jit, torch.rand(3))  # compiling drew nothing from the training stream
    assert sorted(jit.compiled) == [((2, P), N), ((5, P), N)]
    x, idx = _batch(2)  # a short batch's scale N/B is its own, not the first shape's
    _assert_same(_loss_and_grads(lambda: jit(x, idx, N), model, guide, 5),
                 _loss_and_grads(lambda: loss_and_grads(plain, model, guide, x, idx, N), model, guide, 5))


def test_jit_leaves_the_global_param_store_alone():
    pyro.clear_param_store()
    mine = pyro.param("someone_elses", torch.ones(2))
    model, guide, plain = _pair()
    jit = JitLoss(plain, model, guide)
    x, idx = _batch()
    jit(x, idx, N), jit(x, idx, N)
    store = pyro.get_param_store()
    assert list(store.keys()) == ["someone_elses"] and store["someone_elses"] is mine
    assert set(jit.store["params"]) >= {"encoder.0.weight", "decoder.0.weight"}
    # the private store holds the modules' own tensors, so the optimizer's parameters get the gradients
    assert jit.store["params"]["encoder.0.weight"] is guide.encoder[0].weight
    pyro.clear_param_store()


def test_jit_compiles_a_directly_built_guide_with_plain_parameters():
    """A guide built without traceable_params_ (plain nn.Parameters): its parameters reach the
    compiled loss through their param sites, and loss and gradients equal the plain estimator's."""
    model, _, plain = _pair()
    guide = GUIDES["amortized"](model, hidden=(8,))
    jit = JitLoss(plain, model, guide)
    x, idx = _batch()
    _assert_same(_loss_and_grads(lambda: jit(x, idx, N), model, guide, 6),
                 _loss_and_grads(lambda: loss_and_grads(plain, model, guide, x, idx, N), model, guide, 6))
    assert jit.fallback is None and len(jit.compiled) == 1


def test_jit_falls_back_with_one_warning_where_tracing_fails():
    """The semi-amortized guide optimizes inside its own call: the tracer finds a tensor that
    requires grad outside its inputs."""
    model, guide, plain = _pair(guide="semi-amortized")
    jit = JitLoss(plain, model, guide)
    x, idx = _batch()
    with pytest.warns(RuntimeWarning, match="could not compile .*training continues with Trace_ELBO"):
        first = _loss_and_grads(lambda: jit(x, idx, N), model, guide, 6)
    _assert_same(first, _loss_and_grads(lambda: loss_and_grads(plain, model, guide, x, idx, N), model, guide, 6))
    assert jit.fallback.startswith(("RuntimeError", "AssertionError"))  # the tracer's or Pyro's JIT's complaint
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not _compiled_step_ran(jit, model, x, idx, 7)  # no second warning; the plain ELBO ran


@pytest.mark.parametrize("elbo", ["tracegraph", "iwae"])
def test_jit_refuses_estimators_without_a_jit_version(elbo):
    model, guide, _ = _pair()
    with pytest.raises(ConfigError, match="--jit compiles the trace and meanfield"):
        JitLoss(make_elbo(elbo, num_particles=2), model, guide)


def test_jit_refuses_semi_supervised_models():
    config = TrainConfig(model="m2", elbo="enum", latent_dim=D, hidden=(8,), jit=True)
    model, guide = build_model_and_guide(config, P, N)
    split = type("Split", (), {"__len__": lambda self: N, "y": torch.arange(N) % 10, "x": torch.zeros(N, P)})()
    with pytest.raises(ConfigError, match="--jit compiles unsupervised losses"):
        make_objective(config, model, guide, build_elbo(config, model), split, "cpu")


def test_traceable_params_keep_values_keys_and_outputs():
    torch.manual_seed(0)
    net = mlp([4, 5, 3])
    plain = plain_mlp([4, 5, 3])
    plain.load_state_dict(net.state_dict())
    net[0].bias.requires_grad_(False)
    traceable_params_(net), traceable_params_(net)  # twice: the second finds nothing left to convert
    assert list(net.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert [n for n, _ in net.named_parameters()] == [
        "0.weight_unconstrained", "0.bias_unconstrained", "2.weight_unconstrained", "2.bias_unconstrained"]
    assert not net[0].bias.requires_grad and net[0].weight.requires_grad
    z = torch.randn(6, 4)
    assert torch.equal(net(z), plain(z))
    plain.load_state_dict(net.state_dict())  # both directions, old checkpoints' keys included
    with torch.no_grad():
        plain[2].bias.fill_(0.5)
    net.load_state_dict(plain.state_dict())
    assert torch.equal(net[2].bias, torch.full((3,), 0.5))
    assert isinstance(net[0], nn.Linear)


def test_training_with_jit_is_training_without_it(tmp_path):
    """Same seed, same draws: the runs end with identical parameters, and --jit may be switched
    on when resuming."""
    ends = []
    for jit in (False, True):
        out = str(tmp_path / f"jit{jit}")
        train(TrainConfig(hidden=(16,), latent_dim=3, epochs=2, batch_size=128, eval_num_samples=0, jit=jit),
              out, progress=False)
        ends.append(load_checkpoint(os.path.join(out, "last.pt")))
    for part in ("model", "guide"):
        for key in ends[0][part]:
            assert torch.allclose(ends[0][part][key], ends[1][part][key], atol=1e-6), key
    train(TrainConfig(hidden=(16,), latent_dim=3, epochs=3, batch_size=128, eval_num_samples=0, jit=True),
          str(tmp_path / "jitFalse"), resume=True, progress=False)


class _DriftingGuide(torch.nn.Module):
    """A guide whose output depends on Python state that changes at every call (a call counter):
    a traced graph freezes the count, so its loss differs from the plain ELBO's on the same draws."""

    def __init__(self, guide):
        super().__init__()
        self.inner, self.calls = guide, 0

    def forward(self, x, idx, num_data):
        self.calls += 1
        with pyro.poutine.scale(scale=float(self.calls)):
            return self.inner(x, idx, num_data)


def test_auto_keeps_the_plain_elbo_where_the_compiled_loss_differs():
    model, guide, plain = _pair()
    drifting = _DriftingGuide(guide)
    messages = []
    loss = unsupervised_loss(TrainConfig(), model, drifting, plain, report=messages.append)
    x, idx = _batch()
    loss(x, idx, N)
    assert loss.fallback.startswith("_Inexact: the compiled loss") and not loss.compiled
    assert len(messages) == 1 and "training continues with Trace_ELBO" in messages[0]
    calls = drifting.calls
    _loss_and_grads(lambda: loss(x, idx, N), model, drifting, 1)
    assert drifting.calls == calls + 1  # the plain ELBO runs the guide's Python code


@pytest.mark.parametrize("jit, elbo, compiled", [("auto", "trace", True), ("auto", "meanfield", True),
                                                 ("auto", "tracegraph", False), ("auto", "stl", False),
                                                 ("off", "trace", False), ("on", "meanfield", True)])
def test_the_default_compiles_trace_and_meanfield_alone(jit, elbo, compiled):
    model, guide, plain = _pair(elbo)
    loss = unsupervised_loss(TrainConfig(jit=jit, elbo=elbo), model, guide, plain)
    assert isinstance(loss, JitLoss) == compiled


def test_auto_falls_back_quietly_and_the_run_says_so(tmp_path):
    """semi-amortized cannot be traced: under the default the run trains with the plain ELBO,
    without a warning, and its log says why; the same run with --jit off ends identically."""
    log = tmp_path / "log.txt"
    ends = []
    for jit in ("auto", "off"):
        out = str(tmp_path / jit)
        with open(log, "w") as f, warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            train(TrainConfig(hidden=(8,), latent_dim=2, epochs=1, batch_size=400, eval_num_samples=0,
                              guide="semi-amortized", guide_options={"refine_steps": 1}, jit=jit), out,
                  progress=False, log=f)
        ends.append(load_checkpoint(os.path.join(out, "last.pt")))
        if jit == "auto":
            assert "not compiled: Pyro's JitTrace_ELBO could not compile" in log.read_text()
    for key in ends[0]["guide"]:
        assert torch.equal(ends[0]["guide"][key], ends[1]["guide"][key]), key


def test_jit_option_forms(tmp_path):
    from pyrovae.cli.parser import build_parser

    parse = build_parser().parse_args
    assert parse(["train"]).jit is None and TrainConfig().jit == "auto"  # None: the saved or default value
    assert parse(["train", "--jit"]).jit == "on" and parse(["train", "--jit", "off"]).jit == "off"
    assert TrainConfig(jit=True).jit == "on" and TrainConfig(jit=False).jit == "off"  # the former flag
    with pytest.raises(ConfigError, match="--jit must be one of auto, on, off, got 'yes'"):
        TrainConfig(jit="yes").validate()
    saved = tmp_path / "config.json"  # saved when --jit was a flag
    saved.write_text(json.dumps({**TrainConfig().to_dict(), "jit": False}))
    assert TrainConfig.load(str(saved)).jit == "off"
