"""Variance-reduction baselines for score-function gradients of discrete guide sites.

``TraceGraph_ELBO`` reads a site's ``infer["baseline"]``; :func:`nvil_baseline` asks for both
baselines of NVIL (Mnih & Gregor 2014, "Neural Variational Inference and Learning in Belief
Networks", arXiv:1402.0030, section 3.3): a decaying average of the learning signal and an
input-dependent neural baseline b(x), fitted by Pyro to the downstream cost by squared error.
Other estimators ignore the entry.
"""

from pyrovae.nets import mlp

__all__ = ["BASELINE_HIDDEN", "baseline_net", "nvil_baseline"]

BASELINE_HIDDEN = 100  # NVIL's input-dependent baseline: one tanh layer of 100 units
DECAY = 0.9  # the decaying average's beta


def baseline_net(num_inputs):
    """The neural baseline b(x): (..., P) -> (..., 1)."""
    return mlp([num_inputs, BASELINE_HIDDEN, 1], "tanh")


class _Squeezed:
    """b(x) with the trailing unit dimension dropped, so its shape is the cost's, (..., B)."""

    def __init__(self, net):
        self.net = net

    def __call__(self, x):
        return self.net(x).squeeze(-1)


def nvil_baseline(net, x):
    """The ``infer["baseline"]`` entry: decaying average plus the neural baseline ``net`` on ``x`` (B, P)."""
    return {"use_decaying_avg_baseline": True, "baseline_beta": DECAY, "nn_baseline": _Squeezed(net),
            "nn_baseline_input": x}
