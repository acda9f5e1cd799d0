"""The base class of pyrovae's generative models."""

import torch
from pyro import poutine

from pyrovae.local import LocalModule
from pyrovae.nets import set_output_bias

__all__ = ["GenerativeModel"]


class GenerativeModel(LocalModule):
    """A model p(x, z) whose ``forward(x=None, idx=None, num_data=None, ...)`` samples x when it
    is not given (prior-predictive sampling, as Pyro's ``Predictive`` does).

    The defaults below read ``self.decoder`` (z (..., D) -> likelihood outputs), ``self.likelihood``
    and, where there is one, ``self.prior``; models with other networks override them.
    """

    def decode_mean(self, z):
        """E[x | z] for z (..., D): the likelihood's mean at the decoder output, (..., P)."""
        return self.likelihood(self.decoder(z)).mean

    @torch.no_grad()
    def initialize_from_data(self, x):
        """Start p(x | z) at the data's mean pixel values, x (N, P) the training data: the decoder's
        output bias (:func:`~pyrovae.nets.set_output_bias`, any network with a final ``nn.Linear`` or
        an ``initialize_output`` method), then the prior's own hook. Speeds early training; done
        once, before the first step."""
        set_output_bias(self.decoder, self.likelihood.output_for_mean(x.mean(0)))
        prior = getattr(self, "prior", None)
        if hasattr(prior, "initialize_from_data"):
            prior.initialize_from_data(x)

    def sample(self, num):
        """``num`` draws x ~ p(x) (ancestral sampling through every latent site): (num, P).
        Runs without gradients; the global RNG supplies the draws."""
        with poutine.block(), torch.no_grad():
            trace = poutine.trace(self).get_trace(None, num_data=num)
        return trace.nodes["x"]["value"]

