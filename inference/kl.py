"""How an estimator handles each latent site's KL term: in closed form, by Monte Carlo, or summed.

``meanfield`` (Pyro's ``TraceMeanField_ELBO``) replaces E_q[log q(z) - log p(z)] by the
closed-form KL(q || p) wherever ``torch.distributions.kl_divergence`` has a formula for the
pair of distributions (Gaussian guide and Gaussian prior: Kingma & Welling 2014, appendix B),
and falls back to the single-sample Monte Carlo estimate elsewhere (mixture, VampPrior and
flow priors; flow guides). The other estimators use Monte Carlo for every sampled site;
``enum`` sums discrete guide sites exactly. :func:`kl_terms` finds out which applies, site by
site, by tracing the model and guide once, as the ELBO itself does.
"""

import pyro.poutine as poutine
from pyro.poutine.util import prune_subsample_sites
from torch.distributions import kl_divergence

__all__ = ["kl_terms", "ANALYTIC", "MONTE_CARLO", "ENUMERATED"]

ANALYTIC, MONTE_CARLO, ENUMERATED = "analytic", "monte-carlo", "enumerated"


def kl_terms(elbo_name, model, guide, x, idx=None, num_data=None):
    """Each latent site's KL treatment under the estimator ``elbo_name``.

    :param str elbo_name: a name in :data:`~pyrovae.inference.elbos.ELBOS`.
    :param torch.Tensor x: a small batch (B, P) to trace the model and guide on.
    :returns: dict latent site -> ``"analytic"``, ``"monte-carlo"`` or ``"enumerated"``, in the
        model's order; sites the guide does not sample (summed in the model) are left out.
    """
    guide_trace = poutine.trace(guide).get_trace(x, idx, num_data)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, idx, num_data)
    guide_trace, model_trace = prune_subsample_sites(guide_trace), prune_subsample_sites(model_trace)
    terms = {}
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or name not in guide_trace.nodes:
            continue
        q = guide_trace.nodes[name]["fn"]
        if elbo_name == "enum" and q.has_enumerate_support:
            terms[name] = ENUMERATED
        elif elbo_name == "meanfield":
            try:
                kl_divergence(q, site["fn"])
                terms[name] = ANALYTIC
            except NotImplementedError:
                terms[name] = MONTE_CARLO
        else:
            terms[name] = MONTE_CARLO
    return terms
