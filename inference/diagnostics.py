r"""Per-datapoint diagnostics of q: PSIS k-hat and posterior collapse.

* **PSIS k-hat** (Vehtari, Simpson, Gelman, Yao & Gabry 2015, arXiv:1507.02646; used for
  variational inference by Yao, Vehtari, Simpson & Gelman 2018, "Yes, but did it work?",
  arXiv:1802.02538): the shape of a generalized Pareto distribution fitted to the largest
  importance weights p(x, z_k) / q(z_k | x). Below 0.5, importance sampling from q is
  reliable; from 0.5 to 0.7 it is usable; above 0.7, q misses mass of the posterior and the
  IWAE estimate of log p(x) for that datapoint is not to be trusted. Computed with ArviZ
  (``az.psislw``), with the effective sample size of the smoothed weights.
* **Posterior collapse**: the KL of each latent dimension, E_x KL(q(z_d | x) || p(z_d)),
  in nats (analytic for factorized Gaussian q and prior); active units (Burda et al. 2016);
  and the mutual information I_q(x; z) = E_x KL(q(z|x) || p(z)) - KL(q(z) || p(z)) of
  Hoffman & Johnson (2016, "ELBO surgery"), with the aggregate posterior q(z) taken as the
  mixture of q(z | x) over the evaluated examples.
"""

import math
import warnings

import numpy as np
import torch

__all__ = ["psis", "per_dimension_kl", "mutual_information", "KHAT_THRESHOLD", "PSIS_MIN_SAMPLES"]

KHAT_THRESHOLD = 0.7  #: above this, importance sampling from q is unreliable (Yao et al. 2018)
#: the fewest importance samples with a Pareto tail to fit: ArviZ fits the ceil(min(S / 5, 3 sqrt(S)))
#: largest weights and needs more than 4 of them
PSIS_MIN_SAMPLES = 21


def arviz():
    """ArviZ, imported on first use (it takes a second, and ArviZ 0.x announces its 1.0
    refactor on import with a FutureWarning, silenced here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    return az


def psis(log_weights):
    """Pareto-smoothed importance sampling diagnostics per datapoint.

    :param torch.Tensor log_weights: log p(x, z_k) - log q(z_k | x), shape (S, B).
    :returns: ``(khat, ess)``, float64 tensors of shape (B,): the Pareto shape estimate and
        the effective sample size of the smoothed normalized weights, 1 / sum w^2, in (0, S].
        Where all S weights are equal up to rounding (q is the posterior), there is no tail to
        fit and k-hat is -inf. With fewer than :data:`PSIS_MIN_SAMPLES` samples there is no tail
        either: k-hat is NaN and the ESS is that of the raw normalized weights.
    """
    lw = log_weights.detach().double().cpu().numpy().T  # ArviZ wants (observations, samples)
    az = arviz()
    if lw.shape[1] < PSIS_MIN_SAMPLES:
        normalized = lw - np.logaddexp.reduce(lw, axis=1, keepdims=True)
        return torch.full((lw.shape[0],), math.nan, dtype=torch.float64), torch.as_tensor(
            1.0 / np.exp(2 * normalized).sum(axis=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        smoothed, khat = az.psislw(lw)
    flat = (lw.max(axis=1) - lw.min(axis=1)) < 1e-6 * np.maximum(1.0, np.abs(lw).max(axis=1))
    khat = np.where(flat, -np.inf, khat)
    ess = 1.0 / np.exp(2 * smoothed).sum(axis=1)
    return torch.as_tensor(khat), torch.as_tensor(ess)


def per_dimension_kl(loc, scale, prior_loc=0.0, prior_scale=1.0):
    """E_x KL(N(loc_d, scale_d^2) || N(prior_loc_d, prior_scale_d^2)) per dimension, in nats.

    :param loc, scale: q's parameters for N examples, shape (N, D).
    :returns: shape (D,).
    """
    var_ratio = (scale / prior_scale) ** 2
    kl = 0.5 * (var_ratio + ((loc - prior_loc) / prior_scale) ** 2 - 1 - torch.log(var_ratio))
    return kl.mean(0)


@torch.no_grad()
def mutual_information(loc, scale, prior, num_samples=1, generator=None):
    """Monte Carlo estimate of I_q(x; z) for a diagonal Gaussian q over N examples (nats).

    I = E_x E_q(z|x)[log q(z|x) - log q(z)], q(z) = (1/N) sum_n q(z | x_n); the prior enters
    through neither term, so ``prior`` is only used for its device.

    :param loc, scale: shape (N, D).
    :param int num_samples: z draws per example.
    :returns: a float; it lies in [0, log N] up to Monte Carlo error.
    """
    N = loc.shape[0]
    eps = torch.randn((num_samples, *loc.shape), generator=generator, dtype=loc.dtype).to(loc.device)
    z = loc + scale * eps  # (S, N, D)
    normal = torch.distributions.Normal(loc, scale)  # batch (N, D)
    log_q_own = normal.log_prob(z).sum(-1)  # (S, N)
    # log q(z | x_m) for every pair: (S, N, M)
    pair = torch.distributions.Normal(loc[None, None], scale[None, None]).log_prob(z[:, :, None]).sum(-1)
    log_q_agg = torch.logsumexp(pair, dim=-1) - math.log(N)
    return float((log_q_own - log_q_agg).mean())
