"""The validation ELBO that picks the best checkpoint and drives early stopping, its parts, and
the validation log-likelihood tracked during training."""

import torch

from pyrovae.inference.local_fit import fit_local
from pyrovae.inference.marginal import iwae
from pyrovae.training.distributed import SINGLE

__all__ = ["validation_elbo", "validation_scores", "VALID_FIT_STEPS"]

VALID_FIT_STEPS = 50  # per-example guides: Adam steps fitting q to the validation data each epoch


def validation_scores(model, guide, x, seed, device, context=SINGLE, num_samples=1):
    """Means over ``x`` (N, P), nats per datapoint, from K = ``num_samples`` draws of q per
    datapoint: ``elbo``, its ``reconstruction`` E_q log p(x|z) and ``kl`` E_q[log q - log p(z)]
    (elbo = reconstruction - kl), and ``log_likelihood``, the IWAE bound (Burda et al. 2016,
    eq. 8; equal to the ELBO for K = 1). The same random draws every call (common random numbers
    make epochs comparable); the global RNG is untouched. A per-example guide has no parameters
    for these examples: per-example Gaussians are fitted to them from the prior for
    ``VALID_FIT_STEPS`` steps, model frozen. With several processes each scores its shard
    ``x[rank::N]`` and the means are taken over all of ``x``."""
    device = torch.device(device)
    x = context.shard(x).to(device)
    with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
        torch.manual_seed(seed)
        if getattr(guide, "local_tables", ()):
            zeros = torch.zeros(len(x), model.latent_dim, device=device)
            guide, _ = fit_local(model, x, zeros, torch.ones_like(zeros), steps=VALID_FIT_STEPS, lr=3e-2)
        with torch.no_grad():
            result = iwae(model, guide, x, num_samples=num_samples, batch_size=max(1, 1000 // num_samples))
    names = ("elbo", "reconstruction", "kl", "log_likelihood")
    *totals, count = context.all_sum(*(float(getattr(result, n).sum()) for n in names), len(x))
    return {n: total / count for n, total in zip(names, totals)}


def validation_elbo(model, guide, x, seed, device, context=SINGLE):
    """The mean single-sample ELBO of :func:`validation_scores`, nats per datapoint."""
    return validation_scores(model, guide, x, seed, device, context)["elbo"]
