r"""Sticking the landing: the path-derivative ELBO gradient (Roeder, Wu & Duvenaud 2017,
"Sticking the Landing: Simple, Lower-Variance Gradient Estimators for Variational Inference",
arXiv:1703.09194, eq. 8).

With :math:`z = g_\phi(\epsilon)` reparameterized, the ELBO's gradient splits into a path term
and a score term, :math:`\nabla_\phi \mathcal{L} = \mathbb{E}_\epsilon[\nabla_z (\log p(x, z) -
\log q_\phi(z|x)) \nabla_\phi g_\phi(\epsilon)] - \mathbb{E}_q[\nabla_\phi \log q_\phi(z|x)]`.
The score term has expectation zero; STL drops it by evaluating :math:`\log q` with its
parameters held fixed (stop-gradient), :math:`\log q_{\bot(\phi)}(g_\phi(\epsilon))`. The
estimator stays unbiased, and its variance vanishes as q approaches the exact posterior, where
:math:`\log p(x, z) - \log q(z|x)` is constant in z. The loss value is the ordinary negative ELBO.
"""

import torch
from pyro import distributions as dist
from pyro.distributions.util import scale_and_mask
from pyro.infer import Trace_ELBO
from pyro.infer.util import torch_item

from pyrovae.errors import ConfigError

__all__ = ["STL_ELBO", "detach_params", "stopped_log_prob"]


def detach_params(fn):
    """The distribution ``fn`` with its parameters detached (a stop-gradient), same shapes.

    :raises ConfigError: for a distribution whose parameters live in transforms (normalizing
        flows), which cannot be detached from outside.
    """
    if isinstance(fn, dist.Independent):
        return dist.Independent(detach_params(fn.base_dist), fn.reinterpreted_batch_ndims)
    if isinstance(fn, dist.ExpandedDistribution):
        return detach_params(fn.base_dist).expand(fn.batch_shape)
    if isinstance(fn, torch.distributions.TransformedDistribution):
        raise ConfigError(f"the path-derivative estimators (stl, iwae-dreg, iwae-stl) hold q's parameters fixed, and "
                          f"{type(fn).__name__} keeps them in its transforms (a flow guide such as iaf); use a "
                          "Gaussian guide, or --elbo trace or iwae")
    if isinstance(fn, dist.MultivariateNormal):
        return dist.MultivariateNormal(fn.loc.detach(), scale_tril=fn.scale_tril.detach())
    params = {k: v.detach() for k, v in vars(fn).items() if k in fn.arg_constraints and torch.is_tensor(v)}
    try:
        return type(fn)(**params, validate_args=False)
    except TypeError as err:
        raise ConfigError(f"cannot hold the parameters of {type(fn).__name__} fixed for the path-derivative "
                          f"estimators: {err}") from None


def stopped_log_prob(site):
    """log q_{stop(phi)}(z) of a guide sample site: unscaled, per batch element (shape of
    ``site["fn"].batch_shape`` broadcast with the value's); the gradient reaches q's parameters
    only through the reparameterized value z.

    :raises ConfigError: for a site without a reparameterized sampler (discrete latents).
    """
    fn = site["fn"]
    if not fn.has_rsample:
        raise ConfigError(f"the path-derivative estimators (stl, iwae-dreg, iwae-stl) need reparameterized latents, "
                          f"and site {site['name']!r} is not ({type(fn).__name__}); use tracegraph, vimco, enum or "
                          "relaxed for discrete latents")
    return detach_params(fn).log_prob(site["value"])


class STL_ELBO(Trace_ELBO):
    """``Trace_ELBO`` with the path-derivative (sticking-the-landing) gradient: the surrogate
    loss is :math:`-[\\log p(x, z) - \\log q_{\\bot(\\phi)}(z|x)]` with :math:`z = g_\\phi(\\epsilon)`
    (module doc). Works with pyrovae's loop and with stock ``SVI`` (``loss_and_grads``),
    ``num_particles`` and ``vectorize_particles`` as in Pyro.

    :raises ConfigError: at the first step, for a guide site without ``rsample`` or with a flow.
    """

    reparameterized_only = True  # build_elbo refuses models with discrete guide sites

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        elbo, surrogate = 0.0, 0.0
        for site in model_trace.nodes.values():
            if site["type"] == "sample":
                elbo = elbo + torch_item(site["log_prob_sum"])
                surrogate = surrogate + site["log_prob_sum"]
        for site in guide_trace.nodes.values():
            if site["type"] == "sample" and not site["is_observed"]:
                elbo = elbo - torch_item(site["log_prob_sum"])
                surrogate = surrogate - scale_and_mask(stopped_log_prob(site), site["scale"], site["mask"]).sum()
        return -elbo, -surrogate
