r"""``--jit``: Pyro's JIT-compiled ELBOs on pyrovae's module-local parameters, the default path
of ``trace`` and ``meanfield``.

Pyro's ``JitTrace_ELBO`` and ``JitTraceMeanField_ELBO`` trace one evaluation of the loss (guide,
model, log densities and KL terms) with ``torch.jit.trace`` and run the compiled graph on later
steps: the messengers, ``log_prob`` wrappers and parameter effects of a step run once, at
compile time, instead of in Python at every step. Random draws stay random (the graph holds the
sampling ops), and the loss and gradients are those of ``Trace_ELBO`` / ``TraceMeanField_ELBO``:
on the same draws they agree to float rounding (``tests/test_jit.py``). Compilation runs on a
side copy of the random state, so a compiled run draws the same numbers as one without.

Compiled where exact: after tracing, :class:`JitLoss` replays the graph and runs the plain ELBO on
the same random draws and keeps the graph only if the losses and gradients agree to float32
rounding (:data:`RTOL`); otherwise, and where tracing fails, it runs the plain ELBO. Later steps
call the traced graph directly with the parameter tensors (what Pyro's compiled function does,
without its per-call effect handlers and parameter-store lookups).

Pyro's JIT finds parameters in its global parameter store; pyrovae keeps them in the modules
(``module_local_params``). :class:`JitLoss` therefore lists the modules' own tensors under their
``param`` site names in a private store, and enters it (``ParamStore.scope``) only around the
compiled call: the global store is untouched, and two models in one process do not share
parameters through it. Models and guides must read their parameters through ``pyro.param``
effects, as :func:`~pyrovae.nets.traceable_params_` arranges for everything that
:func:`~pyrovae.build.build_model_and_guide` builds.

Limits, from ``torch.jit.trace``: a compiled loss is specialized to the batch shape and the
dataset size (:class:`JitLoss` compiles once per pair, so a short last batch costs one more
compile) and to the control flow of the call it traced. Where tracing fails (a parameter read
outside ``pyro.param``, as in a plain ``nn.Module`` inside a guide; an optimizer inside the
guide), :class:`JitLoss` reports it once and continues with the plain ELBO. Python control flow
that depends on the data's values is frozen at the traced batch: the check on the first batch
catches it only if that batch differs from the traced one, so a model that branches on its
data's values should train with ``--jit off``.
"""

import math
import warnings

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import JitTrace_ELBO, JitTraceMeanField_ELBO, Trace_ELBO, TraceMeanField_ELBO
from torch.distributions import constraints

from pyrovae.errors import ConfigError
from pyrovae.inference.elbos import loss_and_grads

__all__ = ["JIT_ELBOS", "JitLoss", "CompiledOnceMeanField_ELBO", "RTOL"]

# compiled and plain loss, and each gradient, may differ by this fraction of the largest
# value (float32 sums in another order); a traced graph that computes something else differs
# by far more
RTOL = 1e-4


class CompiledOnceMeanField_ELBO(JitTraceMeanField_ELBO):
    """Pyro's ``JitTraceMeanField_ELBO``, compiling once. In Pyro 1.9 its ``differentiable_loss``
    looks for the compiled function under ``_loss_and_surrogate_loss`` and stores it under
    ``_differentiable_loss``, so every call traced the loss again (a step took 6 times as long
    as the plain ELBO's). This calls the stored function once there is one."""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        compiled = getattr(self, "_differentiable_loss", None)
        if compiled is None:
            return super().differentiable_loss(model, guide, *args, **kwargs)
        return compiled(*args, _pyro_model_id=id(model), _pyro_guide_id=id(guide), **kwargs)


# plain Pyro ELBO class -> its JIT-compiled counterpart
JIT_ELBOS = {
    Trace_ELBO: JitTrace_ELBO,
    TraceMeanField_ELBO: CompiledOnceMeanField_ELBO,
}


class JitLoss:
    """``loss_and_grads`` of one model/guide pair through Pyro's JIT ELBO, where it is exact.

    :param elbo: the plain Pyro ELBO (``trace`` or ``meanfield`` from
        :func:`~pyrovae.inference.elbos.make_elbo`); its options (particles, plate depth)
        carry over, and it is the fallback.
    :param model, guide: PyroModules whose parameters are read through ``pyro.param`` effects.
    :param report: ``report(message)``, called once if the loss cannot be compiled (tracing
        failed, or the compiled loss differs from the plain one); default a ``RuntimeWarning``.
    :raises ConfigError: for an estimator without a JIT version here.

    ``self.fallback`` is None while compiled losses run, and the reason once compiling failed.
    """

    def __init__(self, elbo, model, guide, report=None):
        jit_cls = JIT_ELBOS.get(type(elbo))
        if jit_cls is None:
            raise ConfigError(f"--jit compiles the trace and meanfield estimators; {type(elbo).__name__} runs "
                              "without it: use --jit auto or off")
        self.elbo, self.model, self.guide = elbo, model, guide
        self.jit_cls = jit_cls
        self.report = report or _warn
        self.options = dict(num_particles=elbo.num_particles, vectorize_particles=elbo.vectorize_particles,
                            max_plate_nesting=elbo.max_plate_nesting, ignore_jit_warnings=True)
        self.compiled = {}  # (batch shape, num_data) -> the graph traced for it (a _Replay)
        self.store = {"params": {}, "constraints": {}}  # site name -> the module's own tensor
        self.fallback = None

    def __call__(self, x, idx, num_data):
        """One stochastic estimate of the negative ELBO of the batch, its gradient accumulated in
        the parameters' ``.grad``.

        :param torch.Tensor x: the batch (B, P).
        :param torch.Tensor idx: its indices in the dataset (B,).
        :param int num_data: the dataset size (full-data scale).
        :returns: the loss, nats for the whole dataset, as a Python float.
        """
        key = (tuple(x.shape), int(num_data))
        if self.fallback is None and key not in self.compiled:
            try:
                self.compiled[key] = self._compile(x, idx, num_data)
            except Exception as error:  # the plain ELBO below raises again if the model itself is at fault
                self.fallback = f"{type(error).__name__}: {str(error).strip().splitlines()[0]}"
                self.report(f"Pyro's {self.jit_cls.__name__} could not compile this model and guide "
                            f"({self.fallback}); training continues with {type(self.elbo).__name__}")
        if self.fallback is None:
            return self.compiled[key](x, idx)
        return loss_and_grads(self.elbo, self.model, self.guide, x, idx, num_data)

    def _compile(self, x, idx, num_data):
        """Trace the loss for this batch shape in a dry run that leaves no trace, and check the
        graph against the plain ELBO on the same draws: the random state and the parameters'
        gradients are restored afterwards, so the step itself (the compiled graph's first run)
        draws what the plain ELBO would have drawn.

        :raises _Inexact: if the compiled loss or a gradient differs from the plain ELBO's.
        """
        devices = [x.device.index or 0] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            self._register(x, idx, num_data)
            params = list(self.store["params"].values())
            grads = [None if p.grad is None else p.grad.clone() for p in params]
            start = _rng_state(devices)
            try:
                jit = self.jit_cls(**self.options)
                with pyro.get_param_store().scope(self.store), warnings.catch_warnings():
                    warnings.filterwarnings("ignore", "`torch.jit.trace` is deprecated", DeprecationWarning)
                    jit.loss_and_grads(self.model, self.guide, x, idx, num_data=num_data)
                replay = _Replay(jit, self.store["params"])
                compiled = _run_from(start, devices, params, lambda: replay(x, idx))
                plain = _run_from(start, devices, params,
                                  lambda: loss_and_grads(self.elbo, self.model, self.guide, x, idx, num_data))
            finally:
                for p, grad in zip(params, grads):
                    p.grad = grad
        _check_same(compiled, plain, list(self.store["params"]))
        return replay

    @torch.no_grad()
    def _register(self, x, idx, num_data):
        """Record each ``param`` site's unconstrained tensor (the module's own) and constraint."""
        with poutine.block(), poutine.trace(param_only=True) as capture:
            self.guide(x, idx, num_data)
            self.model(x, idx, num_data)
        for name, site in capture.trace.nodes.items():
            value = site["value"]
            unconstrained = value.unconstrained() if hasattr(value, "unconstrained") else value
            self.store["params"][name] = unconstrained
            self.store["constraints"][name] = site["kwargs"].get("constraint", constraints.real)


class _Replay:
    """The graph that Pyro's JIT ELBO traced for one batch shape, called with the parameters'
    unconstrained tensors and the batch, as Pyro's compiled function calls it (``pyro.ops.jit``):
    ``trace`` returns the loss and its surrogate, ``meanfield`` the differentiable loss."""

    def __init__(self, jit, params):
        fn = getattr(jit, "_loss_and_surrogate_loss", None) or jit._differentiable_loss
        (self.graph,) = fn.compiled.values()
        self.params = [params[name] for name in fn._param_names]
        self.surrogate = isinstance(jit, JitTrace_ELBO)

    def __call__(self, x, idx):
        # without the graph executor's profiling and re-specialization passes: faster for these
        # small graphs in `pyrovae bench`
        with torch.jit.optimized_execution(False):
            out = self.graph(*self.params, x, idx)
        loss, surrogate = out if self.surrogate else (out, out)
        surrogate.backward()
        return loss.item()


class _Inexact(Exception):
    """The compiled loss differs from the plain ELBO's on the same draws."""


def _warn(message):
    warnings.warn(f"--jit: {message}", RuntimeWarning, stacklevel=3)


def _rng_state(devices):
    return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in devices]


def _run_from(state, devices, params, fn):
    """``fn()``'s loss and the gradients it leaves, from zero gradients and the random ``state``."""
    torch.set_rng_state(state[0])
    for d, s in zip(devices, state[1]):
        torch.cuda.set_rng_state(s, d)
    for p in params:
        p.grad = None
    loss = fn()
    return loss, [None if p.grad is None else p.grad.to_dense().clone() for p in params]


def _check_same(compiled, plain, names):
    """:raises _Inexact: naming the loss or the first parameter whose gradient differs by more
    than :data:`RTOL` of the plain value's magnitude."""
    if not math.isclose(compiled[0], plain[0], rel_tol=RTOL, abs_tol=RTOL):
        raise _Inexact(f"the compiled loss {compiled[0]:.6g} differs from the plain ELBO's {plain[0]:.6g} on the "
                       "same draws")
    for name, a, b in zip(names, compiled[1], plain[1]):
        if (a is None) != (b is None) or (a is not None and (a - b).abs().max() > RTOL * (b.abs().max() + 1)):
            raise _Inexact(f"the compiled gradient of {name!r} differs from the plain ELBO's on the same draws")
