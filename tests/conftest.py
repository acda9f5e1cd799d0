"""Shared fixtures: small trained runs on digits, made once per test module."""

import pytest
from pyrovae.inference import GUIDES
from pyrovae.models import PRIORS

from pyrovae.config import TrainConfig
from pyrovae.runs.train import train
from tests.plugins import LaplaceGuide, StudentT

# plugins registered as a user's script would: the contract test covers them with no test of their own
PRIORS.register("test-student-t", StudentT)
GUIDES.register("test-laplace", LaplaceGuide)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Train a small digits VAE (3 epochs, one hidden layer of 32) with ``latent_dim``; returns its directory."""

    def make(latent_dim):
        out = tmp_path_factory.mktemp(f"tiny{latent_dim}") / "run"
        train(TrainConfig(latent_dim=latent_dim, hidden=(32,), epochs=3, eval_num_samples=0), str(out), progress=False)
        return out

    return make


@pytest.fixture(autouse=True)
def _fresh_param_store():
    """Each test starts with an empty global Pyro parameter store, as Pyro's own tests do: the
    decaying-average baselines that ``TraceGraph_ELBO`` keeps there are shaped by the batch."""
    import pyro

    pyro.clear_param_store()
    yield
