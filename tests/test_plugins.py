"""Open registries: register(), entry points, import strings, component options, and networks as
arguments (the conv family); a plugin run rebuilt by evaluate, plot and --resume in new processes."""

import json
import pathlib
import subprocess
import sys

import pytest
import torch
from pyrovae.inference import GUIDES
from pyrovae.models import LIKELIHOODS, PRIORS, VAE
from torch import nn

from pyrovae.build import build_model_and_guide
from pyrovae.config import TrainConfig
from pyrovae.errors import ConfigError, UnknownNameError
from pyrovae.nets import NETS, ConvNets, MLPNets, set_output_bias
from pyrovae.registry import PluginError, Registry
from tests.plugins import StudentT

# a user's own file: the test plugins' source, copied where a test needs a file on disk
PLUGIN_FILE = (pathlib.Path(__file__).parent / "plugins.py").read_text()


def test_register_adds_a_name_and_refuses_to_replace_silently():
    table = Registry("prior", "pyrovae.test-none", {"a": int})
    table.register("b", float)
    assert table.resolve("b") is float and "b" in table.names()
    with pytest.raises(ValueError, match="already registered"):
        table.register("b", str)
    table.register("b", str, replace=True)
    assert table.resolve("b") is str
    with pytest.raises(ValueError, match="import strings"):
        table.register("x:y", str)

    @table.register("c")
    class C:
        pass

    assert table.resolve("c") is C


def test_unknown_names_list_the_valid_ones_and_the_import_string_form():
    with pytest.raises(UnknownNameError, match="unknown prior .nope.; valid names: .*laplace.*; registered: test-student-t.*import string"):
        PRIORS.resolve("nope")


def test_import_strings_resolve_modules_and_files(tmp_path):
    assert PRIORS.resolve("tests.plugins:StudentT") is StudentT
    path = tmp_path / "my_priors.py"
    path.write_text(PLUGIN_FILE)
    cls = PRIORS.resolve(f"{path}:StudentT")
    assert cls.__name__ == "StudentT" and cls(4)().event_shape == (4,)
    assert PRIORS.resolve(f"{path}:StudentT") is cls  # imported once


@pytest.mark.parametrize("name, message", [
    ("no_such_pkg.priors:StudentT", r"cannot import no_such_pkg.priors .*pip install"),
    ("tests.plugins:Missing", r"defines no 'Missing'"),
    ("/no/such/file.py:StudentT", r"no file /no/such/file.py"),
])
def test_plugins_that_do_not_load_name_the_import_string(name, message):
    with pytest.raises(PluginError, match=message) as err:
        PRIORS.resolve(name)
    assert name in str(err.value)


def test_entry_points_of_an_installed_package_resolve(tmp_path, monkeypatch):
    """A real distribution on sys.path (a dist-info folder with entry_points.txt), found through
    importlib.metadata as an installed package would be."""
    (tmp_path / "ext_priors.py").write_text(PLUGIN_FILE)
    info = tmp_path / "ext_priors-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ext-priors\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[pyrovae.priors]\nstudent-t = ext_priors:StudentT\n"
                                           "[pyrovae.guides]\nbroken = ext_priors:Nope\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "student-t" in PRIORS.names()
    assert PRIORS.resolve("student-t").__name__ == "StudentT"
    with pytest.raises(PluginError, match="entry point 'ext_priors:Nope' of group 'pyrovae.guides'"):
        GUIDES.resolve("broken")


def test_options_are_checked_against_the_constructor():
    build = lambda **kw: build_model_and_guide(TrainConfig(latent_dim=2, hidden=(8,), **kw), 16, 20)  # noqa: E731
    model, _ = build(prior="mixture", prior_options={"num_components": 3})
    assert model.prior.num_components == 3 and model.prior.locs.shape == (3, 2)
    _, guide = build(guide="low-rank", guide_options={"rank": 1})
    assert guide.distribution(torch.zeros(4, 16)).cov_factor.shape == (4, 2, 1)
    _, guide = build(guide="iaf", guide_options={"num_flows": 3, "context_dim": 5})
    assert len(guide.flows) == 3
    with pytest.raises(ConfigError, match=r"--prior-options: prior 'mixture' has no option 'k'; its options: "
                                          r"num_components=10"):
        build(prior="mixture", prior_options={"k": 3})
    with pytest.raises(ConfigError, match=r"num_components='many' does not fit"):
        build(prior="mixture", prior_options={"num_components": "many"})
    with pytest.raises(ConfigError, match="latent_dim is set by pyrovae"):
        build(prior="mixture", prior_options={"latent_dim": 3})
    with pytest.raises(ConfigError, match="positive"):
        build(guide="low-rank", guide_options={"rank": 0})
    with pytest.raises(ConfigError, match="--elbo-options: elbo 'trace' has no option 'bogus'"):
        from pyrovae.build import build_elbo

        build_elbo(TrainConfig(elbo_options={"bogus": 1}), build()[0])


def _run(args, cwd, **kw):
    return subprocess.run([sys.executable, "-m", "pyrovae", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, **kw)


def test_a_prior_in_a_users_file_trains_and_its_run_rebuilds_in_new_processes(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "my_priors.py").write_text(PLUGIN_FILE)
    run = tmp_path / "run"
    common = ["--out", str(run), "--hidden", "16", "--latent-dim", "2", "--eval-num-samples", "10"]
    first = _run(["train", "--prior", "my_priors.py:StudentT", "--prior-options", "df=4", "--epochs", "1",
                  *common], cwd=work)
    assert first.returncode == 0, first.stderr
    saved = json.loads((run / "config.json").read_text())
    assert saved["prior"] == f"{work / 'my_priors.py'}:StudentT" and saved["prior_options"] == {"df": 4}
    # new processes, another working directory: the saved import string rebuilds the prior
    evaluate = _run(["evaluate", str(run), "--num-samples", "10"], cwd=tmp_path)
    assert evaluate.returncode == 0, evaluate.stderr
    assert json.loads((run / "eval_test_best_amortized_K10.json").read_text())["log_likelihood"] < 0
    plot = _run(["plot", str(run)], cwd=tmp_path)
    assert plot.returncode == 0 and "samples.png" in plot.stdout, plot.stderr
    resume = _run(["train", "--out", str(run), "--resume", "--epochs", "2", "--eval-num-samples", "10"], cwd=tmp_path)
    assert resume.returncode == 0, resume.stderr
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    # the plugin gone: one line naming the import string and how to make it load
    (work / "my_priors.py").unlink()
    missing = _run(["evaluate", str(run), "--num-samples", "10"], cwd=tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert f"no file {work / 'my_priors.py'}" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("shape", [(8, 8), (28, 28)])
def test_conv_networks_map_images_and_extra_inputs_with_any_leading_dims(shape):
    P = shape[0] * shape[1]
    nets = ConvNets(P, shape, (200,), "tanh", channels=(4, 6))
    encoder, decoder = nets.encoder(10, extra_features=3), nets.decoder(5, 2 * P)
    assert encoder(torch.rand(7, 2, P + 3)).shape == (7, 2, 10)
    assert decoder(torch.randn(7, 2, 5)).shape == (7, 2, 2 * P)
    # an image's pixels reach the code through the convolutions, row-major: moving one pixel changes it
    x = torch.zeros(1, P + 3)
    y = x.clone()
    y[0, P - 1] = 1.0
    assert not torch.allclose(encoder(x), encoder(y))


def test_conv_refuses_shapes_it_cannot_halve_twice():
    with pytest.raises(ConfigError, match="divisible by 4"):
        ConvNets(36, (6, 6), (), "tanh")
    with pytest.raises(ConfigError, match="no \\(H, W\\) shape"):
        ConvNets(36, None, (), "tanh")


def test_output_bias_starts_any_decoder_at_the_data_mean():
    mean_logits = torch.linspace(-2, 2, 64)
    conv = ConvNets(64, (8, 8), (), "tanh").decoder(3, 64)
    plain = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 64))
    for decoder in (conv, plain, MLPNets(64).decoder(3, 64)):
        assert set_output_bias(decoder, mean_logits)
        for module in decoder.modules():  # at z's whose features vanish, the output is the bias
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.zeros_(module.weight)
        torch.testing.assert_close(decoder(torch.randn(2, 3)), mean_logits.expand(2, 64))
    assert not set_output_bias(nn.Sequential(nn.Linear(3, 64), nn.Sigmoid()), mean_logits)


def test_models_and_guides_take_networks_as_arguments():
    """A user's own modules (plain nn.Modules) as decoder and encoder: the model observes through
    them, the evaluator and the figures use them."""
    from pyrovae.inference.marginal import iwae

    from pyrovae.analysis.plots import decode_mean

    torch.manual_seed(0)
    decoder = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 16))
    model = VAE(PRIORS["standard-normal"](2), LIKELIHOODS["bernoulli"](16), 2, decoder=decoder)
    guide = GUIDES["amortized"](model, encoder=nn.Linear(16, 4))
    assert model.decoder is decoder
    x = torch.bernoulli(torch.full((5, 16), 0.3))
    model.initialize_from_data(x)
    torch.testing.assert_close(decoder[-1].bias, torch.logit(x.mean(0).clamp(1e-3, 1 - 1e-3)))
    z = torch.randn(3, 2)
    torch.testing.assert_close(decode_mean(model, z), torch.sigmoid(decoder(z)))
    result = iwae(model, guide, x, num_samples=20)
    assert result.log_likelihood.shape == (5,) and torch.isfinite(result.log_likelihood).all()


def test_digits_train_with_the_conv_family_end_to_end(tmp_path):
    from pyrovae.runs.train import train

    result = train(TrainConfig(net="conv", net_options={"channels": [4, 8]}, latent_dim=4, epochs=2,
                               eval_num_samples=20), str(tmp_path / "conv"), progress=False)
    assert result.evaluation.report["log_likelihood"] < 0
    assert {"samples.png", "reconstructions.png"} <= {p.rsplit("/", 1)[-1] for p in result.figures}
    assert NETS.resolve("conv") is ConvNets
