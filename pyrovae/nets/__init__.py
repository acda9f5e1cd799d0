"""Networks: building blocks, and the network families that models and guides are built with.

:data:`NETS` is the registry of families (``--net``): name -> ``Family(num_pixels,
image_shape, hidden, activation, **options)`` with ``encoder(out_features, extra_features=0)``
and ``decoder(in_features, out_features)`` methods (see :class:`~pyrovae.nets.mlp.MLPNets`).
"""

from pyrovae.nets.conv import ConvNets
from pyrovae.nets.mlp import (ACTIVATIONS, MLPNets, broadcast_cat, default_nets, inverse_softplus, mlp, parse_hidden,
                              plain_mlp, set_output_bias, traceable_params_)
from pyrovae.registry import Registry

__all__ = ["NETS", "ACTIVATIONS", "MLPNets", "ConvNets", "mlp", "plain_mlp", "parse_hidden", "broadcast_cat",
           "inverse_softplus", "traceable_params_", "default_nets", "set_output_bias"]

NETS = Registry("net", "pyrovae.nets", {
    "mlp": MLPNets,  # fully connected, the IWAE paper's 784-200-200-50 (Burda et al. 2016)
    "conv": ConvNets,  # two stride-2 convolutions each way, for H and W divisible by 4
})
