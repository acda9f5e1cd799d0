r"""Per-datapoint importance-sampled estimates of log p(x), the ELBO and its parts.

With K samples :math:`z_k \sim q(z|x)` and log weights
:math:`\log w_k = \log p(x, z_k) - \log q(z_k|x)`,

* the IWAE bound (Burda, Grosse & Salakhutdinov 2016, arXiv:1509.00519, eq. 8)
  :math:`\log \hat p(x) = \log \frac1K \sum_k w_k`, a stochastic lower bound whose
  expectation increases with K towards :math:`\log p(x)`;
* the ELBO :math:`\frac1K \sum_k \log w_k`, split into the reconstruction term
  :math:`\frac1K \sum_k \log p(x|z_k)` and the KL term
  :math:`\frac1K \sum_k [\log q(z_k|x) - \log p(z_k)]` (Monte Carlo, so it works for any
  prior and guide);
* the effective sample size of the normalized weights, :math:`(\sum w)^2 / \sum w^2`
  (Kong 1992), which is K for a guide at the exact posterior.

Pyro's ``vectorized_importance_weights`` sums over the data plate; here every site's
log-probability is kept per datapoint, shape (S, B). Samples are drawn in chunks of at
most ``max_rows`` (samples x examples) rows and combined with a streaming log-sum-exp,
so memory stays bounded at K = 5000.
"""

import math
from typing import NamedTuple

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import config_enumerate
from pyro.poutine.enum_messenger import EnumMessenger
from pyro.poutine.util import prune_subsample_sites
from pyrovae.inference import diagnostics
from tqdm.auto import tqdm

__all__ = ["IWAEResult", "particle_traces", "log_weights", "iwae", "active_units", "concat_results"]


class IWAEResult(NamedTuple):
    """Per-datapoint results of :func:`iwae`; tensors of shape (N,) in nats unless noted."""

    log_likelihood: torch.Tensor  #: IWAE estimate of log p(x)
    elbo: torch.Tensor  #: Monte Carlo ELBO
    reconstruction: torch.Tensor  #: E_q[log p(x|z)]
    kl: torch.Tensor  #: E_q[log q(z|x) - log p(z)]
    ess: torch.Tensor  #: effective sample size of the K importance weights, in (0, K]
    posterior_mean: dict  #: latent site -> E_q[z|x], shape (N, D)
    num_samples: int  #: K
    khat: torch.Tensor | None = None  #: PSIS k-hat (see pyrovae.inference.diagnostics), with psis=True
    psis_ess: torch.Tensor | None = None  #: ESS of the Pareto-smoothed weights, with psis=True


def _per_datapoint(site, shape):
    """A site's log-prob per datapoint: shape ``shape`` = (S, B), or (E..., S, B) with enumerated
    dimensions on the left (dimensions of size 1 broadcast)."""
    log_prob = site["unscaled_log_prob"]  # per datapoint: no subsample scale (masks in the distribution stay)
    if _enumerated(site):  # (E..., 1, 1) and the like: must broadcast against (S, B)
        ok = log_prob.dim() >= 2 and all(t in (1, s) for t, s in zip(log_prob.shape[-2:], shape))
    else:  # (S, B), or (E..., S, B) for a site downstream of enumerated ones
        ok = log_prob.dim() >= 2 and log_prob.shape[-1] == shape[-1] and log_prob.shape[-2] in (1, shape[0])
    if not ok:
        raise ValueError(
            f"site {site['name']!r} has log-prob shape {tuple(log_prob.shape)}, expected {tuple(shape)} "
            "(samples, examples): per-datapoint estimates need every site inside the data plate"
        )
    return log_prob


def particle_traces(model, guide, x, num_samples, idx=None, num_data=None, guide_input=None):
    """Trace ``num_samples`` guide draws per row of ``x`` and the model replayed on them, in one
    vectorized pass (a particle plate left of the model's plates).

    For an ``enumerable`` model, the guide's discrete sites and the model's sites marked
    ``infer={"enumerate": "parallel"}`` are enumerated instead of sampled, guide sites first,
    in dimensions left of the particle plate (as :class:`~pyro.infer.TraceEnum_ELBO` does).

    :param guide_input: what the guide reads instead of ``x`` (e.g. an image with its missing
        pixels filled); the model always sees ``x``.
    :returns: ``(guide_trace, model_trace)``, subsample sites pruned, log-probs computed.
    """
    guide_input = x if guide_input is None else guide_input
    if getattr(model, "enumerable", False):
        guide = config_enumerate(guide, "parallel")
    with pyro.plate("particles", num_samples, dim=-(model.max_plate_nesting + 1)):
        guide_trace = poutine.trace(
            EnumMessenger(first_available_dim=-(model.max_plate_nesting + 2))(guide)
        ).get_trace(guide_input, idx, num_data)
        model_trace = poutine.trace(
            EnumMessenger()(poutine.replay(model, trace=guide_trace))  # enumerates after the guide's dims
        ).get_trace(x, idx, num_data)
    guide_trace, model_trace = prune_subsample_sites(guide_trace), prune_subsample_sites(model_trace)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    return guide_trace, model_trace


def _enumerated(site):
    return site["infer"].get("_enumerate_dim") is not None


def log_weights(model, guide, x, num_samples, idx=None, num_data=None):
    r"""Draw ``num_samples`` guide samples for each row of ``x`` in one vectorized pass.

    Enumerated discrete sites are summed exactly. With guide-enumerated values :math:`e` (weights
    :math:`q(e|x)`), model-only enumerated values :math:`c` and sampled latents :math:`z_e`,

    * the log weight is :math:`\log \sum_{e,c} p(x, e, c, z_e) / q(z_e | x, e)`, an unbiased
      estimate of :math:`p(x)` in the exponent, as each branch :math:`e` is weighted by its
      exact sum rather than sampled;
    * the ELBO term is :math:`\sum_e q(e|x) [\log \sum_c p(x, e, c, z_e) - \log q(e|x)
      - \log q(z_e|x,e)]`, the ELBO that :class:`~pyro.infer.TraceEnum_ELBO` optimizes.

    Without enumerated sites both are :math:`\log p(x, z) - \log q(z|x)`.

    :param model: the model; ``model.max_plate_nesting`` places the particle plate.
    :param guide: the guide, with the model's signature.
    :param torch.Tensor x: a batch, shape (B, P), treated as the whole dataset (no scaling).
    :param int num_samples: S.
    :param idx, num_data: the batch's indices in a dataset of ``num_data`` examples, for guides
        with per-example parameters; the estimates stay per datapoint (no subsample scaling).
    :returns: ``(log_w, elbo, log_lik, posterior_mean)``: the log weights, the ELBO terms and
        the expected log p(x | latents), each of shape (S, B), and a dict site -> E_q[z|x] of
        shape (B, D): the analytic mean averaged over the S draws, or, for q without one (flows),
        the average of the S samples; for a site drawn given enumerated ones (M2's z given y),
        the q(e|x)-weighted sum of its means; None for an enumerated site, or without an
        analytic mean when S = 1.
    :raises ValueError: if a site's log-probability is not per datapoint.
    """
    S, B = num_samples, x.shape[0]
    guide_trace, model_trace = particle_traces(model, guide, x, S, idx, num_data)
    joint, log_lik, q_enum = 0.0, 0.0, 0.0  # log p(x, latents) - log q(sampled), log p(x|.), log q(e)
    guide_dims, model_dims, means = set(), set(), {}
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        log_q = _per_datapoint(site, (S, B))
        if _enumerated(site):
            guide_dims.add(site["infer"]["_enumerate_dim"])
            q_enum = q_enum + log_q
            means[name] = None
            continue
        joint = joint - log_q
        try:
            mean = site["fn"].mean
        except NotImplementedError:  # flows: the Monte Carlo mean of the S samples, if S > 1
            mean = site["value"] if S > 1 else None
        if mean is not None and mean.dim() > 3 and torch.is_tensor(q_enum):
            # downstream of enumerated sites, (E..., S, B, D): E_q[z|x] = sum_e q(e|x) E_q[z|x, e]
            weight = q_enum.exp().unsqueeze(-1)
            leading = tuple(range(mean.dim() - 3))
            mean = (weight * mean).sum(leading).expand(S, B, mean.shape[-1])
        means[name] = mean.reshape(S, B, -1).mean(0) if mean is not None and mean.shape[:2] == (S, B) else None
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample":
            continue
        log_p = _per_datapoint(site, (S, B))
        joint = joint + log_p
        if site["is_observed"]:
            log_lik = log_lik + log_p
        elif _enumerated(site) and name not in guide_trace.nodes:
            model_dims.add(site["infer"]["_enumerate_dim"])
    shape = torch.broadcast_shapes(torch.Size([S, B]), *(torch.as_tensor(t).shape for t in (joint, log_lik, q_enum)))
    joint, log_lik, q_enum = (torch.as_tensor(t, device=x.device).expand(shape) for t in (joint, log_lik, q_enum))
    enum_dims = sorted(guide_dims | model_dims)
    log_w = joint.logsumexp(enum_dims, keepdim=True) if enum_dims else joint
    if model_dims:  # model-only sites: the model's marginal, and p(c | x, e, z) for the reconstruction
        dims = sorted(model_dims)
        marginal = joint.logsumexp(dims, keepdim=True)
        log_lik = ((joint - marginal).exp() * log_lik).sum(dims, keepdim=True)
        joint = marginal
    if guide_dims:
        dims, q = sorted(guide_dims), q_enum.exp()
        joint = (q * (joint - q_enum)).sum(dims, keepdim=True)
        log_lik = (q * log_lik).sum(dims, keepdim=True)
    return tuple(t.reshape(S, B) for t in (log_w, joint, log_lik)) + (means,)


@torch.no_grad()
def iwae(model, guide, x, num_samples=5000, batch_size=100, max_rows=20000, progress=False, psis=False,
         idx=None):
    """Per-datapoint IWAE log-likelihood, ELBO, reconstruction, KL and ESS.

    :param torch.Tensor x: data, shape (N, P).
    :param int num_samples: K, samples per datapoint.
    :param int batch_size: examples per chunk.
    :param int max_rows: most (samples x examples) rows evaluated at once; bounds memory
        to about ``max_rows * P`` floats per intermediate tensor.
    :param progress: a tqdm progress bar over examples; None shows it only on a terminal.
    :param bool psis: also compute PSIS k-hat per datapoint (keeps one batch's K x B log
        weights in memory at a time).
    :param torch.Tensor idx: indices of the rows of ``x`` (N,) in the training set, for guides with
        per-example parameters (evaluated on the data they were trained on).
    :returns: an :class:`IWAEResult`, tensors of shape (N,), float64.
    :raises ValueError: if a site's log-probability is not per datapoint (global latents).
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    results = []
    bar = tqdm(total=x.shape[0], desc=f"IWAE K={num_samples}", unit="example",
               disable=None if progress is None else not progress)
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        where = {} if idx is None else {"idx": idx[start : start + batch_size], "num_data": getattr(guide, "num_data", None)}
        chunk = max(1, min(num_samples, max_rows // xb.shape[0]))
        lse_w = lse_2w = torch.full((xb.shape[0],), -math.inf, dtype=torch.float64)
        sum_el = sum_ll = torch.zeros(xb.shape[0], dtype=torch.float64)
        mean_sums, drawn, kept = {}, 0, []
        while drawn < num_samples:
            s = min(chunk, num_samples - drawn)
            lw, el, ll, means = log_weights(model, guide, xb, s, **where)
            lw, el, ll = lw.double().cpu(), el.double().cpu(), ll.double().cpu()
            if psis:
                kept.append(lw)
            lse_w = torch.logaddexp(lse_w, lw.logsumexp(0))
            lse_2w = torch.logaddexp(lse_2w, (2 * lw).logsumexp(0))
            sum_el, sum_ll = sum_el + el.sum(0), sum_ll + ll.sum(0)
            for name, m in means.items():
                mean_sums.setdefault(name, []).append(None if m is None else m.double().cpu() * s)
            drawn += s
        elbo = sum_el / num_samples
        recon = sum_ll / num_samples
        post = {
            name: None if any(v is None for v in vals) else sum(vals) / num_samples
            for name, vals in mean_sums.items()
        }
        khat, psis_ess = diagnostics.psis(torch.cat(kept)) if psis else (None, None)
        results.append((lse_w - math.log(num_samples), elbo, recon, recon - elbo, (2 * lse_w - lse_2w).exp(), post,
                        khat, psis_ess))
        bar.update(xb.shape[0])
    bar.close()
    cat = [torch.cat([r[i] for r in results]) for i in range(5)]
    post = {
        name: None if any(r[5][name] is None for r in results) else torch.cat([r[5][name] for r in results])
        for name in results[0][5]
    }
    khat, psis_ess = (torch.cat([r[i] for r in results]) for i in (6, 7)) if psis else (None, None)
    return IWAEResult(*cat, posterior_mean=post, num_samples=num_samples, khat=khat, psis_ess=psis_ess)


def active_units(posterior_mean, threshold=0.01):
    """Count latent dimensions with Cov_x(E_q[z_d | x]) > ``threshold`` (Burda et al. 2016,
    section 5.2, threshold 1e-2).

    :param torch.Tensor posterior_mean: E_q[z|x] for N examples, shape (N, D).
    :returns: the number of active units, an int.
    """
    return int((posterior_mean.var(0, unbiased=False) > threshold).sum())


def concat_results(results):
    """Join :class:`IWAEResult` s of consecutive batches into one."""
    first = results[0]
    joined = {}
    for field in ("log_likelihood", "elbo", "reconstruction", "kl", "ess", "khat", "psis_ess"):
        values = [getattr(r, field) for r in results]
        joined[field] = None if values[0] is None else torch.cat(values)
    means = {name: None if any(r.posterior_mean[name] is None for r in results)
             else torch.cat([r.posterior_mean[name] for r in results]) for name in first.posterior_mean}
    return IWAEResult(posterior_mean=means, num_samples=first.num_samples, **joined)
