"""``pyrovae bench``: time training steps of the guides on the same model, in one process.

Each row is the median wall-clock time of one training step (``loss_and_grads`` and the
optimizer step) over ``repeats`` blocks of ``steps`` steps after ``warmup`` steps, with the
ratio to the first row (the amortized guide with ``trace``), measured in the same run. These
machines are noisy: compare ratios, not absolute times.
"""

import json
import statistics
import time

import torch

from pyrovae.build import build_elbo, build_model_and_guide
from pyrovae.config import TrainConfig
from pyrovae.data import batches, load_dataset
from pyrovae.inference.elbos import loss_and_grads
from pyrovae.optim import make_optimizers
from pyrovae.train import resolve_device

__all__ = ["bench_steps", "ROWS"]

# (label, guide, elbo, local_steps)
ROWS = (
    ("amortized, trace", "amortized", "trace", 0),
    ("amortized, meanfield", "amortized", "meanfield", 0),
    ("per-example, trace (SVI)", "per-example", "trace", 0),
    ("per-example, trace, --local-steps 1", "per-example", "trace", 1),
    ("semi-amortized (5 steps), trace", "semi-amortized", "trace", 0),
)


def _time_steps(config, data, steps, warmup, repeats, device):
    torch.manual_seed(0)
    model, guide = build_model_and_guide(config, data.num_pixels, len(data.train))
    model.initialize_from_data(data.train.x)
    model.to(device), guide.to(device)
    elbo = build_elbo(config, model)
    optimizer = make_optimizers([model, guide], config.lr, config.local_lr)
    order = torch.Generator().manual_seed(0)
    feed = (b for _ in range(10**6) for b in batches(data.train, config.batch_size, order))
    n = len(data.train)

    def step():
        x, idx = next(feed)
        x, idx = x.to(device), idx.to(device)
        for _ in range(config.local_steps):
            optimizer.zero_grad()
            loss_and_grads(elbo, model, guide, x, idx, n)
            optimizer.step(shared=False)
        optimizer.zero_grad()
        loss_and_grads(elbo, model, guide, x, idx, n)
        optimizer.step(local=not config.local_steps)

    for _ in range(warmup):
        step()
    blocks = []
    for _ in range(repeats):
        _synchronize(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        _synchronize(device)
        blocks.append((time.perf_counter() - t0) / steps)
    return statistics.median(blocks)


def _synchronize(device):
    if device.type == "cuda":  # kernels run asynchronously: time them, not their launches
        torch.cuda.synchronize(device)


def bench_steps(data="digits", data_dir=None, steps=50, warmup=20, repeats=5, out=None, device="cpu"):
    """Time the rows of :data:`ROWS` on ``device``; returns a list of dicts and optionally writes JSON.

    :raises ConfigError: if ``device`` is CUDA and no GPU is available."""
    device = resolve_device(device)
    dataset = load_dataset(data, data_dir)
    results = []
    for label, guide, elbo, local_steps in ROWS:
        config = TrainConfig(data=data, data_dir=data_dir, guide=guide, elbo=elbo, local_steps=local_steps)
        seconds = _time_steps(config, dataset, steps, warmup, repeats, device)
        results.append({"step": label, "seconds_median": seconds})
    for r in results:
        r["ratio"] = r["seconds_median"] / results[0]["seconds_median"]
    if out:
        with open(out, "w") as f:
            json.dump({"data": data, "device": str(device), "batch_size": TrainConfig.batch_size, "steps": steps, "repeats": repeats,
                       "threads": torch.get_num_threads(), "results": results}, f, indent=2)
    return results
