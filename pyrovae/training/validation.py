"""The validation ELBO that picks the best checkpoint and drives early stopping."""

import torch

from pyrovae.inference.local_fit import fit_local
from pyrovae.inference.marginal import iwae
from pyrovae.training.distributed import SINGLE

__all__ = ["validation_elbo", "VALID_FIT_STEPS"]

VALID_FIT_STEPS = 50  # per-example guides: Adam steps fitting q to the validation data each epoch


def validation_elbo(model, guide, x, seed, device, context=SINGLE):
    """Mean single-sample ELBO over ``x`` (N, P), nats per datapoint; the same random draws
    every call (common random numbers make epochs comparable); the global RNG is untouched.
    A per-example guide has no parameters for these examples: per-example Gaussians are fitted
    to them from the prior for ``VALID_FIT_STEPS`` steps, model frozen. With several processes
    each scores its shard ``x[rank::N]`` and the mean is taken over all of ``x``."""
    device = torch.device(device)
    x = context.shard(x).to(device)
    with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
        torch.manual_seed(seed)
        if getattr(guide, "local_tables", ()):
            zeros = torch.zeros(len(x), model.latent_dim, device=device)
            guide, _ = fit_local(model, x, zeros, torch.ones_like(zeros), steps=VALID_FIT_STEPS, lr=3e-2)
        with torch.no_grad():
            result = iwae(model, guide, x, num_samples=1, batch_size=1000)
    total, count = context.all_sum(float(result.elbo.sum()), len(x))
    return total / count
