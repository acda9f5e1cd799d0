r"""ELBO estimators, looked up by name: Pyro's own classes, configured, never copied.

=============  ===========================  ==================================================
name           Pyro class                   gradient estimator
=============  ===========================  ==================================================
trace          ``Trace_ELBO``               reparameterization (Kingma & Welling 2014)
meanfield      ``TraceMeanField_ELBO``      reparameterization with analytic KL terms
tracegraph     ``TraceGraph_ELBO``          score function with baselines for
                                            non-reparameterizable sites (Mnih & Gregor 2014)
enum           ``TraceEnum_ELBO``           exact sums over the guide's discrete sites (marked
                                            by :func:`~pyro.infer.config_enumerate`) and the
                                            model's marked ones
iwae           ``RenyiELBO(alpha=0)``       importance-weighted bound (Burda et al. 2016,
                                            arXiv:1509.00519, eq. 8)
relaxed        ``Trace_ELBO`` on relaxed    Gumbel-softmax / Concrete reparameterization of
               model and guide              discrete sites (see :mod:`.relax`)
stl            :class:`~.stl.STL_ELBO`      path derivative, "sticking the landing" (Roeder,
                                            Wu & Duvenaud 2017; see :mod:`.stl`)
iwae-dreg      :class:`~.dreg.IWAE_DReG`    the IWAE bound, doubly reparameterized guide
                                            gradients (Tucker et al. 2019; :mod:`.dreg`)
iwae-stl       :class:`~.dreg.IWAE_STL`     the IWAE bound, path-derivative guide gradients
vimco          :class:`~.vimco.VIMCO`       the K-sample bound, score function with
                                            leave-one-out baselines (Mnih & Rezende 2016)
=============  ===========================  ==================================================

All estimate the ELBO :math:`\mathbb{E}_q[\log p(x,z) - \log q(z|x)]`, except ``iwae``,
``iwae-dreg``, ``iwae-stl`` and ``vimco``, which estimate :math:`\mathbb{E}[\log \frac1K \sum_k p(x,z_k)/q(z_k|x)]` per datapoint.
Particles are vectorized: ``num_particles`` samples are drawn in one batched pass.
"""

import pyro.poutine as poutine
from pyro.infer import RenyiELBO, Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO, config_enumerate
from pyrovae.inference.dreg import IWAE_DReG, IWAE_STL
from pyrovae.inference.relax import Relaxed_ELBO
from pyrovae.inference.stl import STL_ELBO
from pyrovae.inference.vimco import VIMCO

from pyrovae.errors import ConfigError
from pyrovae.registry import Registry, lookup

__all__ = ["ELBOS", "make_elbo", "loss_and_grads", "Enumerated_ELBO", "local_elbo"]


class Enumerated_ELBO(TraceEnum_ELBO):
    """``TraceEnum_ELBO`` with every discrete site of the guide enumerated in parallel: guides
    need no enumeration marks, so other estimators sample the same sites without warnings."""

    def _get_traces(self, model, guide, args, kwargs):
        return super()._get_traces(model, config_enumerate(guide, "parallel"), args, kwargs)


# name -> Pyro ELBO class (keyword options are added by make_elbo)
ELBOS = Registry("ELBO", "pyrovae.elbos", {
    "trace": Trace_ELBO,
    "meanfield": TraceMeanField_ELBO,
    "tracegraph": TraceGraph_ELBO,
    "enum": Enumerated_ELBO,
    "iwae": RenyiELBO,  # alpha=0
    "relaxed": Relaxed_ELBO,  # temperature options from make_elbo's keyword arguments
    "stl": STL_ELBO,
    "iwae-dreg": IWAE_DReG,
    "iwae-stl": IWAE_STL,
    "vimco": VIMCO,
})


def local_elbo(model, **kwargs):
    """The reparameterized ELBO for fitting Gaussian guides to ``model`` (per-example fits,
    refinement): ``Trace_ELBO``, or :class:`Enumerated_ELBO` for models whose discrete sites must
    be summed out (``model.requires_enum``). Keyword arguments go to the class."""
    cls = Enumerated_ELBO if getattr(model, "requires_enum", False) else Trace_ELBO
    return cls(max_plate_nesting=model.max_plate_nesting, **kwargs)


def make_elbo(name, num_particles=1, max_plate_nesting=1, **options):
    """Build the Pyro ELBO called ``name``.

    :param str name: a key of :data:`ELBOS`.
    :param int num_particles: samples per datapoint (K), drawn vectorized when K > 1.
    :param int max_plate_nesting: the model's plate depth (1 for the data plate).
    :param options: estimator options (``relaxed``: see :class:`~.relax.Relaxed_ELBO`).
    :raises UnknownNameError: for an unknown name (the message lists the valid ones).
    :raises ConfigError: for ``num_particles < 1``, or ``iwae`` with one particle.
    """
    cls = lookup(ELBOS, name, "ELBO")
    if int(num_particles) < 1:
        raise ConfigError(f"num_particles must be a positive integer, got {num_particles}")
    kwargs = dict(
        num_particles=int(num_particles),
        vectorize_particles=num_particles > 1,
        max_plate_nesting=max_plate_nesting,
    )
    if (cls is RenyiELBO or getattr(cls, "multi_sample", False)) and num_particles < 2:
        raise ConfigError(
            f"the {name} bound with one particle is the ELBO; pass --num-particles K with "
            "K >= 2 (Burda et al. 2016 use K = 5 and 50), or use --elbo trace"
        )
    if cls is RenyiELBO:
        kwargs["alpha"] = 0.0
    return cls(**kwargs, **options)


def loss_and_grads(elbo, model, guide, x, idx=None, num_data=None, **kwargs):
    """One stochastic estimate of the negative ELBO, with its gradient accumulated in ``.grad``.

    Estimators with a ``differentiable_loss`` run through the ``ELBOModule`` that
    ``elbo(model, guide)`` returns; ``TraceGraph_ELBO`` and ``RenyiELBO`` have none and
    run their own ``loss_and_grads``.

    ``RenyiELBO`` takes a log-mean-exp over particles of each datapoint's log weight, which
    Pyro computes after the plate's subsample scale ``num_data / B`` is applied: that would
    sharpen the weights by a factor ``num_data / B``. So for ``iwae`` the model and guide run
    at scale ``B / num_data`` (undoing the plate's scale) and the loss is scaled back, making
    it an unbiased full-data estimate of the per-datapoint IWAE bound (eq. 8 of Burda et al.).

    :param elbo: a Pyro ELBO from :func:`make_elbo`.
    :param torch.Tensor x: the batch, shape (B, P).
    :param torch.Tensor idx: the batch's indices, shape (B,), or None.
    :param int num_data: the dataset size; defaults to B.
    :param kwargs: further keyword arguments of the model and guide (e.g. ``y``, observed labels).
    :returns: the loss as a Python float, in nats for the whole dataset (minus the ELBO,
        estimated from the batch).
    """
    batch = x.shape[0]
    num_data = num_data or batch
    if isinstance(elbo, RenyiELBO) and num_data != batch:
        rescale = batch / num_data
        loss = elbo.loss_and_grads(
            poutine.scale(model, scale=rescale), poutine.scale(guide, scale=rescale), x, idx, num_data, **kwargs
        )
        return float(loss) / rescale
    if hasattr(elbo, "differentiable_loss"):
        loss = elbo(model, guide)(x, idx, num_data, **kwargs)
        loss.backward()
        return loss.item()
    return float(elbo.loss_and_grads(model, guide, x, idx, num_data, **kwargs))
