"""Neural network building blocks shared by models and guides."""

import torch
from pyro.nn import PyroModule, PyroParam
from pyro.nn.module import to_pyro_module_
from torch import nn

from pyrovae.local import localize_
from pyrovae.registry import lookup

__all__ = ["ACTIVATIONS", "MLPNets", "mlp", "plain_mlp", "parse_hidden", "broadcast_cat", "inverse_softplus",
           "traceable_params_", "default_nets", "set_output_bias"]

# name -> activation module; the IWAE paper (Burda et al. 2016) uses tanh.
ACTIVATIONS = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "gelu": nn.GELU,
}


def parse_hidden(text):
    """Parse ``"200,200"`` into ``(200, 200)``; an empty string gives ``()`` (a linear map).

    :raises ValueError: if a size is not a positive integer.
    """
    if isinstance(text, (tuple, list)):
        sizes = tuple(int(s) for s in text)
    else:
        text = str(text).strip()
        sizes = tuple(int(s) for s in text.split(",") if s.strip()) if text else ()
    if any(s <= 0 for s in sizes):
        raise ValueError(f"hidden layer sizes must be positive integers, got {text!r}")
    return sizes


def plain_mlp(sizes, activation="tanh"):
    """A multilayer perceptron ``sizes[0] -> ... -> sizes[-1]`` with no activation on the output,
    as a plain ``torch.nn.Sequential``.

    The network acts on the last dimension, so inputs of shape (S, B, in) give (S, B, out).
    Weights start from Glorot & Bengio's (2010) uniform initialization and biases at zero,
    as in Burda et al. (2016, appendix C).

    :param sequence sizes: layer widths, at least two.
    :param str activation: a name in :data:`ACTIVATIONS`.
    :raises ValueError: for fewer than two sizes.
    """
    if len(sizes) < 2:
        raise ValueError(f"an MLP needs at least input and output sizes, got {sizes}")
    act = lookup(ACTIVATIONS, activation, "activation")
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = nn.Linear(n_in, n_out)
        nn.init.xavier_uniform_(linear.weight)
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def mlp(sizes, activation="tanh"):
    """:func:`plain_mlp` converted to a :class:`~pyro.nn.PyroModule`, so that its parameters
    appear as ``param`` sites in Pyro traces (estimators that call ``backward`` themselves, such
    as ``RenyiELBO``, only differentiate when they see such sites)."""
    net = plain_mlp(sizes, activation)
    to_pyro_module_(net)
    return localize_(net)


# layers whose parameters traceable_params_ may reach when they sit inside a PyroModule
_LAYERS = (nn.Linear, nn.Embedding)


def traceable_params_(module):
    """Make every parameter of ``module``'s PyroModule tree a :class:`~pyro.nn.PyroParam`, in place.

    A ``PyroModule`` reads a plain ``nn.Parameter`` directly and only announces the read as a
    ``param`` site; it reads a ``PyroParam`` through the ``pyro.param`` effect and computes with
    the value the effect returns. Pyro's JIT ELBOs (``--jit``, :mod:`pyrovae.inference.jit`)
    need the latter: they feed parameters to the compiled loss as inputs through that effect.
    Values, ``requires_grad``, parameter order and ``state_dict`` keys (``weight``, not
    ``weight_unconstrained``) are unchanged; so are the modules' outputs and gradients.

    ``nn.Linear`` and ``nn.Embedding`` children of PyroModules become PyroModules first; plain
    ``nn.Module`` children of other types, and their subtrees, are left as they are (the JIT
    falls back on them, see :class:`~pyrovae.inference.jit.JitLoss`).

    :param PyroModule module: the root, e.g. a model or guide.
    """
    names = [n for n, p in module.named_parameters(recurse=False) if not n.endswith("_unconstrained")]
    for name in names:
        old = getattr(module, name)
        setattr(module, name, PyroParam(old.detach().clone()))
        getattr(module, name + "_unconstrained").requires_grad_(old.requires_grad)
    if names:
        module.register_state_dict_post_hook(_public_keys(names))
        module.register_load_state_dict_pre_hook(_stored_keys(names))
    for child in module.children():
        if type(child) in _LAYERS:
            to_pyro_module_(child, recurse=False)
        if isinstance(child, PyroModule):
            traceable_params_(child)


def _public_keys(names):
    def hook(module, state_dict, prefix, local_metadata):
        for name in names:
            state_dict[prefix + name] = state_dict.pop(prefix + name + "_unconstrained")
    return hook


def _stored_keys(names):
    def hook(module, state_dict, prefix, *args):
        for name in names:
            if prefix + name in state_dict:
                state_dict[prefix + name + "_unconstrained"] = state_dict.pop(prefix + name)
    return hook


def inverse_softplus(y):
    """The inverse of ``softplus``: ``log(expm1(y))`` for ``y > 0``."""
    y = torch.as_tensor(y)
    return y + torch.log(-torch.expm1(-y))


def broadcast_cat(*tensors):
    """Concatenate along the last dimension after broadcasting all other dimensions, so an
    input (B, P) joins an enumerated one-hot label (C, 1, C) as (C, B, P + C)."""
    batch = torch.broadcast_shapes(*(t.shape[:-1] for t in tensors))
    return torch.cat([t.expand(*batch, t.shape[-1]) for t in tensors], dim=-1)


class MLPNets:
    """The default network family (``--net mlp``): multilayer perceptrons with the ``hidden``
    widths, the IWAE paper's architecture (Burda et al. 2016, appendix C).

    A network family builds the networks of a model and its guide from the data's shape. Its
    constructor takes ``(num_pixels, image_shape, hidden, activation, **options)``; it has two
    methods:

    * ``encoder(out_features, extra_features=0)``: a module mapping (..., P + extra) to
      (..., out_features); the first P inputs are the image, flattened row-major, the rest
      vectors such as an M2 label;
    * ``decoder(in_features, out_features)``: a module mapping (..., in_features) to
      (..., out_features), where ``out_features`` is the likelihood's number of outputs (P for
      Bernoulli logits).

    Any ``nn.Module`` does; pyrovae reads nothing else from it, except an optional
    ``initialize_output(bias)`` on decoders (see :func:`set_output_bias`).

    :param int num_pixels: P.
    :param tuple image_shape: (H, W), or None (not used by MLPs).
    :param tuple hidden: hidden layer widths; ``()`` gives linear maps.
    :param str activation: a name in :data:`ACTIVATIONS`.
    """

    def __init__(self, num_pixels, image_shape=None, hidden=(200, 200), activation="tanh"):
        self.num_pixels, self.image_shape = num_pixels, image_shape
        self.hidden, self.activation = tuple(hidden), activation

    def encoder(self, out_features, extra_features=0):
        return mlp([self.num_pixels + extra_features, *self.hidden, out_features], self.activation)

    def decoder(self, in_features, out_features):
        return mlp([in_features, *self.hidden, out_features], self.activation)


def default_nets(nets, num_pixels, hidden, activation):
    """``nets``, or the MLP family with ``hidden`` and ``activation`` when it is None."""
    return MLPNets(num_pixels, None, hidden, activation) if nets is None else nets


@torch.no_grad()
def set_output_bias(decoder, bias):
    """Start ``decoder``'s output at ``bias`` (shape (out_features,)): through its
    ``initialize_output(bias)`` method, or the bias of its last layer when that is an
    ``nn.Linear`` of the right width. Other networks are left as they are (the initialization
    only speeds early training).

    :returns: whether the output was set.
    """
    if callable(getattr(decoder, "initialize_output", None)):
        decoder.initialize_output(bias)
        return True
    last = decoder[-1] if isinstance(decoder, nn.Sequential) and len(decoder) else decoder
    if isinstance(last, nn.Linear) and last.bias is not None and last.bias.shape == bias.shape:
        last.bias.copy_(bias)
        return True
    return False
