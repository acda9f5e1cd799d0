"""Per-example inference: sparse training, test-time fitting, and the gap decomposition."""

import json

import pytest
import torch
from pyrovae.inference.elbos import loss_and_grads, make_elbo
from pyrovae.inference.guides import GUIDES
from pyrovae.inference.local_fit import fit_local, frozen
from pyrovae.inference.marginal import iwae

from pyrovae import cli
from pyrovae.data import Split, batches
from pyrovae.training.optim import make_optimizers
from tests.exact import make_ppca


def test_per_example_training_reaches_the_exact_posterior():
    """Minibatch SVI with SparseAdam on the per-example tables, model fixed: every row ends at
    p(z_i | x_i), so the approximation gap log p(x) - ELBO closes (PPCA: diagonal posterior)."""
    ppca = make_ppca(num_pixels=6, latent_dim=2, num_data=40)
    guide = GUIDES["per-example"](ppca.model, num_data=40)
    optimizer = make_optimizers([guide], lr=1e-3, local_lr=0.05)
    assert optimizer.shared is None and optimizer.local is not None
    elbo = make_elbo("trace", num_particles=16)
    order = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    with frozen(ppca.model):
        for epoch in range(300):
            if epoch in (100, 200):  # decreasing step sizes, as SVI's convergence needs (Hoffman et al. 2013)
                optimizer.local.param_groups[0]["lr"] /= 5
            for x, idx in batches(Split(ppca.x), 8, order):
                optimizer.zero_grad()
                loss_and_grads(elbo, ppca.model, guide, x, idx, 40)
                optimizer.step()
    loc, scale = ppca.posterior(ppca.x)
    assert torch.allclose(guide.loc.weight, loc, atol=0.05)
    assert torch.allclose(torch.nn.functional.softplus(guide.raw_scale.weight) + guide.min_scale, scale, atol=0.05)
    result = iwae(ppca.model, guide, ppca.x, num_samples=2000, idx=torch.arange(40))
    exact = ppca.log_marginal(ppca.x).double()
    assert abs(float((exact - result.elbo).mean())) < 0.02  # approximation gap ~ 0 (KL to the posterior)


def test_gap_ordering_on_ppca():
    """L[q] <= L[q*] <= log p-hat(x) ~ log p(x) for a mismatched encoder and its refinement."""
    ppca = make_ppca(num_pixels=6, latent_dim=2, num_data=30)
    encoder = ppca.guide_at(loc_shift=0.6, scale_factor=1.7)
    torch.manual_seed(0)
    from pyrovae.inference.guides import gaussian_params

    loc, scale = gaussian_params(encoder, ppca.x)
    qstar, curve = fit_local(ppca.model, ppca.x, loc, scale, steps=400, lr=0.05, num_particles=10, record_at=(0, 100))
    L_q = iwae(ppca.model, encoder, ppca.x, num_samples=4000).elbo.mean()
    refined = iwae(ppca.model, qstar, ppca.x, num_samples=4000)
    exact = ppca.log_marginal(ppca.x).double().mean()
    assert L_q + 0.3 < refined.elbo.mean() <= refined.log_likelihood.mean() + 1e-3
    assert abs(refined.log_likelihood.mean() - exact) < 0.02
    assert exact - refined.elbo.mean() < 0.05  # diagonal q can match this posterior
    assert curve[1][1] - curve[0][1] > 0.5 * float(refined.elbo.mean() - L_q)  # most of the gap in 100 steps


@pytest.fixture(scope="module")
def amortized_run(tiny_run):
    return tiny_run(4)


def test_evaluate_inference_modes(amortized_run, capsys):
    elbos = {}
    for mode in ("amortized", "refined", "per-example"):
        assert cli.main(["evaluate", str(amortized_run), "--num-samples", "50", "--inference", mode,
                         "--refine-steps", "30"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["inference"] == mode
        elbos[mode] = report["elbo"]
    assert (amortized_run / "eval_test_best_refined30_K50.json").exists()
    assert elbos["refined"] > elbos["amortized"]  # refinement from the encoder helps


def test_compare_inference_command(amortized_run, capsys):
    args = ["compare-inference", str(amortized_run), "--num-examples", "40", "--num-samples", "200",
            "--fit-steps", "100"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "amortization gap" in out and "approximation gap" in out
    report = json.loads((amortized_run / "compare_inference_test_best.json").read_text())
    assert report["elbo_q"][0] <= report["elbo_qstar"][0] <= report["log_likelihood"][0]
    assert report["amortization_gap"][1] > 0 and len(report["refinement_curve"]["from_scratch"]) == 8
    assert (amortized_run / "compare_inference_test_best.png").stat().st_size > 1000


@pytest.mark.parametrize("local_steps", ["0", "2"])
def test_train_per_example_guide(tmp_path, capsys, local_steps):
    out = tmp_path / "run"
    assert cli.main(["train", "--guide", "per-example", "--local-steps", local_steps, "--epochs", "3",
                     "--latent-dim", "4", "--hidden", "32", "--eval-num-samples", "20", "--out", str(out)]) == 0
    report = json.loads((out / "eval_test_best_per-example100_K20.json").read_text())
    assert report["inference"] == "per-example" and report["refine_steps"] == 100  # fitted on the test split
    capsys.readouterr()
    assert cli.main(["evaluate", str(out), "--split", "train", "--num-samples", "10"]) == 0
    assert json.loads(capsys.readouterr().out)["inference"] == "table"


def test_local_steps_needs_per_example_guide(tmp_path, capsys):
    assert cli.main(["train", "--local-steps", "2", "--out", str(tmp_path / "run")]) == 2
    assert "--local-steps needs a guide with per-example parameters" in capsys.readouterr().err


def test_semi_amortized_refinement_improves_q_and_trains_the_encoder_through_it():
    ppca = make_ppca(num_pixels=6, latent_dim=2, num_data=30)
    base = ppca.guide_at(loc_shift=0.8, scale_factor=1.5)
    sa = GUIDES["semi-amortized"](ppca.model, hidden=())
    sa.encoder.load_state_dict(base.encoder.state_dict())
    sa.refine_steps, sa.refine_lr = 20, 0.05
    torch.manual_seed(0)
    plain = iwae(ppca.model, base, ppca.x, num_samples=2000).elbo.mean()
    refined = iwae(ppca.model, sa, ppca.x, num_samples=2000).elbo.mean()
    assert refined > plain + 0.3  # refinement moves q towards the exact posterior
    # training: the gradient reaches the encoder through the refinement (it differs from the
    # plain encoder's gradient at the same weights and noise)
    elbo = make_elbo("trace")
    grads = []
    for guide in (base, sa):
        guide.train()
        for p in guide.parameters():
            p.grad = None
        torch.manual_seed(1)
        with frozen(ppca.model):
            loss_and_grads(elbo, ppca.model, guide, ppca.x)
        grads.append(guide.encoder[0].weight.grad.clone())
    assert torch.isfinite(grads[1]).all() and grads[1].abs().sum() > 0
    assert not torch.allclose(grads[0], grads[1], atol=1e-3)


def test_bench_command(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "--steps", "2", "--warmup", "1", "--repeats", "2", "--iwae-examples", "3",
                     "--num-samples", "20", "--startup-repeats", "1", "--digits-epochs", "2", "--digits-repeats", "0",
                     "--iwae-repeats", "1", "--json", str(out)]) == 0  # the digits group: tests/test_bench.py
    text = capsys.readouterr().out
    assert "per-example, trace" in text and "Pyro SVI" in text and "m2, enum" in text and "iwae()" in text
    groups = json.loads(out.read_text())["groups"]
    assert set(groups) == {"VAE training step", "M2 training step", "IWAE evaluation, K=20", "command-line start-up"}
    for rows in groups.values():
        assert rows[0]["ratio"] == 1.0 and rows[0]["row"].startswith("reference")
        assert all(r["seconds_median"] > 0 and r["ratio"] > 0 for r in rows)
    assert cli.main(["bench", "--steps", "0"]) == 2
