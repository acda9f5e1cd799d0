"""A convolutional network family (``--net conv``) for square-or-not images whose height and
width are divisible by 4: 28x28 MNIST, 8x8 digits.

Encoder: two stride-2 convolutions (4x4 kernels) halve the image twice, then one linear map
takes the features (and any extra inputs, e.g. an M2 label) to the outputs. Decoder: the mirror
image: a linear map to ``channels[-1]`` maps of (H/4, W/4), and two sub-pixel convolutions (a 3x3
convolution to 4 times the channels, then a pixel shuffle that doubles H and W; Shi et al. 2016,
arXiv:1609.05158) back to (H, W), with a learned bias per output (so
:func:`~pyrovae.nets.mlp.set_output_bias` can start it at the data's mean). Sub-pixel layers
compute what stride-2 transposed convolutions do, and run several times faster on CPUs.
"""

import math

import torch
from pyro.nn.module import to_pyro_module_
from torch import nn

from pyrovae.errors import ConfigError
from pyrovae.local import localize_
from pyrovae.nets.mlp import ACTIVATIONS, plain_mlp
from pyrovae.registry import lookup

__all__ = ["ConvNets", "ConvEncoder", "ConvDecoder"]


def _pyro(module):
    to_pyro_module_(module)
    return localize_(module)


class ConvEncoder(nn.Module):
    """(..., P + extra) -> (..., out_features); the first P inputs are an (H, W) image."""

    def __init__(self, image_shape, channels, hidden, activation, out_features, extra_features=0):
        super().__init__()
        (H, W), (c1, c2) = image_shape, channels
        act = lookup(ACTIVATIONS, activation, "activation")
        self.image_shape, self.num_pixels = (H, W), H * W
        self.features = nn.Sequential(nn.Conv2d(1, c1, 4, 2, 1), act(), nn.Conv2d(c1, c2, 4, 2, 1), act())
        self.head = plain_mlp([c2 * (H // 4) * (W // 4) + extra_features, *hidden, out_features], activation)

    def forward(self, u):
        batch = u.shape[:-1]
        image, extra = u[..., :self.num_pixels], u[..., self.num_pixels:]
        h = self.features(image.reshape(-1, 1, *self.image_shape)).flatten(1)  # (N, c2 H/4 W/4)
        h = torch.cat([h, extra.reshape(h.shape[0], -1)], -1)
        return self.head(h).reshape(*batch, -1)


class ConvDecoder(nn.Module):
    """(..., in_features) -> (..., out_features), out_features = k P: k maps of (H, W),
    flattened map after map (the likelihood's order: all P logits, or P means then P scales)."""

    def __init__(self, image_shape, channels, hidden, activation, in_features, out_features):
        super().__init__()
        (H, W), (c1, c2) = image_shape, channels
        act = lookup(ACTIVATIONS, activation, "activation")
        if out_features % (H * W):
            raise ConfigError(f"--net conv: the likelihood's {out_features} outputs are not maps of {H}x{W}")
        self.maps, self.base = out_features // (H * W), (c2, H // 4, W // 4)
        self.head = nn.Sequential(plain_mlp([in_features, *hidden, math.prod(self.base)], activation), act())
        self.upsample = nn.Sequential(nn.Conv2d(c2, 4 * c1, 3, 1, 1), nn.PixelShuffle(2), act(),
                                      nn.Conv2d(c1, 4 * self.maps, 3, 1, 1, bias=False), nn.PixelShuffle(2))
        self.output_bias = nn.Parameter(torch.zeros(out_features))

    @torch.no_grad()
    def initialize_output(self, bias):
        self.output_bias.copy_(bias)

    def forward(self, z):
        batch = z.shape[:-1]
        h = self.head(z).reshape(-1, *self.base)  # (N, c2, H/4, W/4)
        return self.upsample(h).reshape(*batch, -1) + self.output_bias  # (..., k H W)


class ConvNets:
    """The convolutional family; see the module docstring and :class:`~pyrovae.nets.mlp.MLPNets`
    for the family contract.

    :param int num_pixels: P = H W.
    :param tuple image_shape: (H, W), each divisible by 4.
    :param tuple hidden: not used: the convolutions take the place of the MLP's hidden layers
        (``fc`` adds fully connected ones).
    :param str activation: a name in :data:`~pyrovae.nets.mlp.ACTIVATIONS`.
    :param channels: the two convolutions' channel counts, nearest the image first.
    :param fc: widths of fully connected layers between the convolutions and the latents.
    :raises ConfigError: without an image shape, or for one not divisible by 4.
    """

    def __init__(self, num_pixels, image_shape=None, hidden=(200, 200), activation="tanh", channels=(8, 16), fc=()):
        if image_shape is None or len(image_shape) != 2 or math.prod(image_shape) != num_pixels:
            raise ConfigError(f"--net conv needs images: the data's {num_pixels} pixels have no (H, W) shape; "
                              "use --net mlp")
        if any(side % 4 for side in image_shape):
            raise ConfigError(f"--net conv halves the image twice, so H and W must be divisible by 4; got "
                              f"{image_shape[0]}x{image_shape[1]}; use --net mlp")
        if len(channels) != 2 or any(int(c) < 1 for c in channels):
            raise ConfigError(f"--net-options channels takes two positive counts, got {channels}")
        self.image_shape, self.channels = tuple(image_shape), tuple(int(c) for c in channels)
        self.hidden, self.activation = tuple(int(w) for w in fc), activation

    def encoder(self, out_features, extra_features=0):
        return _pyro(ConvEncoder(self.image_shape, self.channels, self.hidden, self.activation, out_features,
                                 extra_features))

    def decoder(self, in_features, out_features):
        return _pyro(ConvDecoder(self.image_shape, self.channels, self.hidden, self.activation, in_features,
                                 out_features))
