"""Data-parallel training (pyrovae.training.distributed): two gloo processes with global batch B take the
same steps as one process with batch B, for the amortized and the per-example guide, and for the
estimators with a surrogate loss (stl, iwae-dreg and vimco with K = 3 particles).

The only randomness in a step is the guide's noise, which the two layouts draw in different
streams. Here it is fixed per example (and particle): z_i = loc_i + scale_i * eps_i, or
1[Phi(eps_i) < p_i] for a Bernoulli latent, with a seeded eps table, so both layouts compute the
same gradients and must end at the same parameters up to float rounding (the sums over
examples are split differently).
"""

import json
import os
import socket
import subprocess
import sys

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.multiprocessing as mp
from pyro.poutine.messenger import Messenger
from pyrovae.inference.elbos import loss_and_grads, make_elbo

from pyrovae.build import build_model_and_guide
from pyrovae.config import TrainConfig
from pyrovae.data import Split, batches
from pyrovae.training.distributed import (
    Context,
    DataParallelObjective,
    shard_batches,
    whole_state,
)
from pyrovae.training.optim import Optimizers, make_optimizers

N, P, D, B, EPOCHS, WORLD = 40, 12, 3, 10, 2, 2


K = 3  # particles of the multi-sample estimators
MULTI_SAMPLE = ("iwae-dreg", "vimco")


class FixedNoise(Messenger):
    """Draw the guide's latent from given standard normal noise eps, (B, D) or, under K vectorized
    particles, (K, B, D): a Gaussian as loc + scale * eps, a Bernoulli as 1[Phi(eps) < p]."""

    def __init__(self, eps):
        super().__init__()
        self.eps = eps

    def _pyro_sample(self, msg):
        if msg["is_observed"] or msg["done"] or not hasattr(msg["fn"], "base_dist"):  # plates' subsample sites
            return
        base = msg["fn"].base_dist
        if isinstance(base, dist.Bernoulli):
            msg["value"] = (torch.distributions.Normal(0.0, 1.0).cdf(self.eps) < base.probs).to(base.probs)
        else:
            msg["value"] = base.loc + base.scale * self.eps
        msg["done"] = True


def _problem(elbo="trace"):
    gen = torch.Generator().manual_seed(1)
    x = torch.bernoulli(torch.full((N, P), 0.4), generator=gen)
    eps = torch.randn(N, K, D, generator=gen) if elbo in MULTI_SAMPLE else torch.randn(N, D, generator=gen)
    return x, eps


def _noise(eps_rows):
    """The noise of a batch in the latent's layout: (B, D), or (K, B, D) with particles."""
    return eps_rows.transpose(0, 1) if eps_rows.dim() == 3 else eps_rows


def _build(guide, rows, elbo="trace"):
    pyro.clear_param_store()
    torch.manual_seed(0)
    model = "bernoulli-vae" if elbo == "vimco" else "vae"
    config = TrainConfig(model=model, guide=guide, latent_dim=D, hidden=[8])
    model, guide = build_model_and_guide(config, P, rows)
    num_particles = K if elbo in MULTI_SAMPLE else 1
    optimizer = make_optimizers([model, guide], 1e-2, 5e-2)
    if elbo == "vimco":
        # the Bernoulli prior's logits get gradients that are exactly 0 in one process and 1e-6
        # (rounding) in two, which Adam's normalized step turns into +-lr: compare under SGD
        optimizer = Optimizers(torch.optim.SGD(optimizer.shared.param_groups[0]["params"], lr=1e-2), None)
    return model, guide, make_elbo(elbo, num_particles=num_particles), optimizer


def _state(model, guide, context, optimizer):
    guide_state, _ = whole_state(context, guide, optimizer, N)
    return {**{f"model.{k}": v.clone() for k, v in model.state_dict().items()},
            **{f"guide.{k}": v.clone() for k, v in guide.state_dict().items()}, **{
            f"guide.{k}": v for k, v in guide_state.items()}}


def _one_process(guide_name, elbo_name="trace"):
    x, eps = _problem(elbo_name)
    model, guide, elbo, optimizer = _build(guide_name, N, elbo_name)
    gen = torch.Generator().manual_seed(0)
    for _ in range(EPOCHS):
        for xb, idx in batches(Split(x), B, gen):
            optimizer.zero_grad()
            with FixedNoise(_noise(eps[idx])):
                loss_and_grads(elbo, model, guide, xb, idx, N)
            optimizer.step()
    return _state(model, guide, Context(0, 1, torch.device("cpu")), optimizer)


def _worker(rank, guide_name, elbo_name, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        context = Context(rank, WORLD, torch.device("cpu"))
        x, eps = _problem(elbo_name)
        x_mine, eps_mine = context.shard(x), context.shard(eps)
        model, guide, elbo, optimizer = _build(guide_name, context.shard_size(N), elbo_name)
        objective = DataParallelObjective(model, guide, elbo, N, context, (x_mine[:2], torch.arange(2)))
        gen = torch.Generator().manual_seed(0)
        losses = []
        for _ in range(EPOCHS):
            for xb, idx, size in shard_batches(context, x_mine, N, B, gen):
                optimizer.zero_grad()
                with FixedNoise(_noise(eps_mine[idx])):
                    losses.append(objective(xb, idx, size))
                optimizer.step()
        state = _state(model, guide, context, optimizer)
        if context.is_main:
            torch.save({"state": state, "losses": losses}, out)
        torch.distributed.barrier()  # both ranks finished before either leaves the group
    finally:
        torch.distributed.destroy_process_group()
    # done and saved: leave without interpreter finalization, where gloo's worker threads can still
    # be torn down and abort the process (a rank died once with SIGABRT and "terminate called
    # without an active exception" in a random-order run of the suite)
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(0)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("guide_name, elbo_name", [("amortized", "trace"), ("per-example", "trace"),
                                                   ("amortized", "stl"), ("amortized", "iwae-dreg"),
                                                   ("amortized", "vimco")])
def test_two_processes_match_one_process_with_the_global_batch(guide_name, elbo_name, tmp_path):
    out = str(tmp_path / "ddp.pt")
    mp.spawn(_worker, args=(guide_name, elbo_name, _free_port(), out), nprocs=WORLD, join=True)
    ddp = torch.load(out)
    single = _one_process(guide_name, elbo_name)
    assert set(ddp["state"]) == set(single)
    initial = _build(guide_name, N, elbo_name)[:2]
    moved = 0
    for name, value in single.items():
        assert ddp["state"][name].shape == value.shape, name
        torch.testing.assert_close(ddp["state"][name], value, rtol=1e-4, atol=1e-5, msg=name)
        module, key = initial[0] if name.startswith("model.") else initial[1], name.split(".", 1)[1]
        moved += not torch.equal(module.state_dict()[key], value)
    assert moved >= 2  # the steps changed parameters: the comparison is not of two initial states
    assert len(ddp["losses"]) == EPOCHS * N // B and all(torch.isfinite(torch.tensor(ddp["losses"])))


def test_every_rank_reads_only_its_shard_and_the_union_is_the_global_batch():
    x = torch.arange(23.0).unsqueeze(-1)
    seen = {}
    for rank in range(3):
        context = Context(rank, 3, torch.device("cpu"))
        for step, (xb, idx, size) in enumerate(shard_batches(context, context.shard(x), 23, 5,
                                                             torch.Generator().manual_seed(4))):
            assert (xb.squeeze(-1).long() % 3 == rank).all()  # example i lives on rank i % 3
            seen.setdefault(step, []).append((xb.squeeze(-1), size))
    order = list(batches(Split(x), 5, torch.Generator().manual_seed(4)))
    assert len(seen) == len(order)
    for step, (xb, _) in enumerate(order):
        parts = seen[step]
        assert sorted(torch.cat([p for p, _ in parts]).tolist()) == sorted(xb.squeeze(-1).tolist())
        assert all(size == len(xb) for _, size in parts)


def test_dynamic_binarization_draws_the_same_pixels_whatever_the_number_of_processes():
    x = torch.rand(23, 6, generator=torch.Generator().manual_seed(0))
    single = [(xb, idx) for xb, idx in batches(Split(x), 5, torch.Generator().manual_seed(2), binarize=True)]
    assert all(((xb == 0) | (xb == 1)).all() for xb, _ in single)
    assert any((xb != x[idx].round()).any() for xb, idx in single)  # Bernoulli draws, not thresholding
    for world in (2, 3):
        rows = {}
        for rank in range(world):
            context = Context(rank, world, torch.device("cpu"))
            gen = torch.Generator().manual_seed(2)
            for step, (xb, local, _) in enumerate(shard_batches(context, context.shard(x), 23, 5, gen, binarize=True)):
                for row, i in zip(xb, local * world + rank):
                    rows[(step, int(i))] = row
        for step, (xb, idx) in enumerate(single):
            for row, i in zip(xb, idx):
                assert torch.equal(rows[(step, int(i))], row)


def test_whole_table_gathers_rows_in_example_order():
    table = torch.arange(7 * 2.0).reshape(7, 2)
    shards = [Context(r, 3, torch.device("cpu")).shard(table) for r in range(3)]
    assert [len(s) for s in shards] == [Context(r, 3, torch.device("cpu")).shard_size(7) for r in range(3)]
    full = torch.empty_like(table)
    for r, s in enumerate(shards):
        full[r::3] = s
    assert torch.equal(full, table)


def _pyrovae(*args, nproc=1):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = ["-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port", str(_free_port())]
    done = subprocess.run([sys.executable, *(launch if nproc > 1 else []), "-m", "pyrovae", *args],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_torchrun_two_processes_write_a_run_like_one_process(tmp_path):
    """The command line under torchrun: a categorical VAE whose ELBO and evaluation are exact sums
    (enum, two 10-way latents, thresholded digits), so nothing in a step is random, and two
    processes must end where one process ends: every parameter, the metrics and the evaluation
    equal up to float rounding (the sums over examples are split differently)."""
    common = ["train", "--model", "categorical-vae", "--latent-dim", "2", "--elbo", "enum", "--epochs", "1",
              "--eval-num-samples", "20"]
    _pyrovae(*common, "--out", str(tmp_path / "one"))
    two = _pyrovae(*common, "--out", str(tmp_path / "two"), nproc=2)
    assert sorted(os.listdir(tmp_path / "one")) == sorted(os.listdir(tmp_path / "two"))
    assert two.stdout.count("run saved in") == 1  # rank 0 reports, once
    assert (tmp_path / "one" / "config.json").read_text() == (tmp_path / "two" / "config.json").read_text()
    one_ckpt, two_ckpt = (torch.load(tmp_path / d / "last.pt", weights_only=False) for d in ("one", "two"))
    assert one_ckpt["step"] == two_ckpt["step"] == 15  # 1,437 training images in batches of 100
    for part in ("model", "guide"):
        assert one_ckpt[part].keys() == two_ckpt[part].keys()
        for name, value in one_ckpt[part].items():
            torch.testing.assert_close(two_ckpt[part][name], value, rtol=1e-4, atol=1e-5, msg=f"{part}.{name}")
    moments = one_ckpt["optimizer"]["shared"]["state"]
    assert moments and all(float(m["exp_avg"].abs().max()) > 0 for m in moments.values())  # it took steps
    (one_metrics,), (two_metrics,) = ([json.loads(line) for line in open(tmp_path / d / "metrics.jsonl")]
                                      for d in ("one", "two"))
    for key in ("train_elbo", "valid_elbo"):
        assert two_metrics[key] == pytest.approx(one_metrics[key], rel=1e-6)
    one_eval, two_eval = (json.loads((tmp_path / d / "eval_test_best_amortized_K20.json").read_text())
                          for d in ("one", "two"))
    for key in ("log_likelihood", "elbo"):
        assert two_eval[key] == pytest.approx(one_eval[key], rel=1e-6)


def test_torchrun_resume_continues_the_sharded_per_example_run_exactly(tmp_path):
    common = ["train", "--guide", "per-example", "--eval-num-samples", "0"]
    _pyrovae(*common, "--epochs", "2", "--out", str(tmp_path / "straight"), nproc=2)
    _pyrovae(*common, "--epochs", "1", "--out", str(tmp_path / "resumed"), nproc=2)
    _pyrovae(*common, "--epochs", "2", "--out", str(tmp_path / "resumed"), "--resume", nproc=2)
    a, b = (torch.load(tmp_path / d / "last.pt", weights_only=False) for d in ("straight", "resumed"))
    assert a["guide"]["loc.weight"].shape[0] == b["guide"]["loc.weight"].shape[0] > 1000  # the whole table
    for part in ("model", "guide"):
        for name, value in a[part].items():
            assert torch.equal(value, b[part][name]), f"{part}.{name}"
    for i, moments in a["optimizer"]["local"]["state"].items():
        assert torch.equal(moments["exp_avg"], b["optimizer"]["local"]["state"][i]["exp_avg"])
