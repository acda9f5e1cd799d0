"""Models with closed-form answers: probabilistic PCA and a one-categorical-latent model.

Probabilistic PCA as a pyrovae VAE (Tipping & Bishop 1999):

z ~ N(0, I_D), x | z ~ N(W z + b, sigma^2 I_P), built from the real VAE class with a linear
decoder and a fixed-noise Gaussian likelihood. Then

* log p(x) = log N(x; b, W W^T + sigma^2 I);
* p(z | x) = N(C W^T (x - b) / sigma^2, C) with C = (I + W^T W / sigma^2)^{-1}.

W has orthogonal columns, so C is diagonal and the amortized diagonal-Gaussian guide with a
linear encoder can represent the exact posterior.

The categorical model: one 3-way latent y, a linear decoder and 4 binary pixels, so log p(x),
the ELBO and its gradient are finite sums over y.
"""

import math

from types import SimpleNamespace

import torch
from torch.distributions import MultivariateNormal

from pyrovae.inference.guides import GUIDES
from pyrovae.inference.guides.categorical import CategoricalGuide
from pyrovae.models import VAE
from pyrovae.models.categorical_vae import CategoricalVAE
from pyrovae.models.likelihoods import BernoulliLikelihood, GaussianLikelihood
from pyrovae.models.priors import PRIORS
from pyrovae.nets import inverse_softplus


def make_ppca(num_pixels=5, latent_dim=2, sigma=0.5, seed=0, num_data=20):
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(num_pixels, latent_dim, generator=gen))
    W = q * torch.linspace(1.5, 0.7, latent_dim)  # orthogonal columns, distinct norms
    b = torch.randn(num_pixels, generator=gen) * 0.3
    model = VAE(PRIORS["standard-normal"](latent_dim), GaussianLikelihood(num_pixels, scale=sigma), latent_dim, hidden=())
    with torch.no_grad():
        model.decoder[0].weight.copy_(W)
        model.decoder[0].bias.copy_(b)
    marginal = MultivariateNormal(b, W @ W.T + sigma**2 * torch.eye(num_pixels))
    C = torch.linalg.inv(torch.eye(latent_dim) + W.T @ W / sigma**2)
    A = C @ W.T / sigma**2  # posterior mean = A (x - b)

    def posterior(x):
        return (x - b) @ A.T, C.diagonal().sqrt().expand(x.shape[0], latent_dim)

    def guide_at(loc_shift=0.0, scale_factor=1.0):
        """An amortized guide with a linear encoder at the exact posterior, optionally
        shifted by ``loc_shift`` and with scales multiplied by ``scale_factor``."""
        guide = GUIDES["amortized"](model, hidden=())
        scale = C.diagonal().sqrt() * scale_factor
        with torch.no_grad():
            lin = guide.encoder[0]
            lin.weight.zero_()
            lin.weight[:latent_dim] = A
            lin.bias[:latent_dim] = -A @ b + loc_shift
            lin.bias[latent_dim:] = inverse_softplus(scale - guide.min_scale)
        return guide

    def kl_to_posterior(x, loc_shift=0.0, scale_factor=1.0):
        """KL(q || p(z|x)) per datapoint for guide_at(loc_shift, scale_factor)."""
        s2 = C.diagonal()
        r = scale_factor**2
        return 0.5 * (latent_dim * (r - 1 - torch.log(torch.tensor(r))) + (loc_shift**2 / s2).sum()) * torch.ones(x.shape[0])

    x = _sample(marginal, num_data, seed)
    return SimpleNamespace(model=model, W=W, b=b, sigma=sigma, x=x, log_marginal=marginal.log_prob,
                           posterior=posterior, guide_at=guide_at, kl_to_posterior=kl_to_posterior,
                           marginal=marginal)


def _sample(marginal, n, seed):
    with torch.random.fork_rng():
        torch.manual_seed(seed + 1)
        return marginal.sample((n,))


def make_categorical(num_classes=3, num_pixels=4, num_data=5, seed=0):
    """(model, guide, x): a :class:`CategoricalVAE` with one ``num_classes``-way latent, linear decoder
    and encoder with spread-out random weights (so that every term matters), and binary x (B, P)."""
    torch.manual_seed(seed)
    model = CategoricalVAE(None, BernoulliLikelihood(num_pixels), latent_dim=1, hidden=(), num_classes=num_classes)
    guide = CategoricalGuide(model, hidden=())
    with torch.no_grad():
        for p in [*model.decoder.parameters(), *guide.encoder.parameters()]:
            p.normal_(0, 1.0)
    x = torch.bernoulli(torch.full((num_data, num_pixels), 0.5))
    return model, guide, x


def categorical_exact_terms(model, guide, x):
    """Per-datapoint exact ELBO and log p(x) of :func:`make_categorical`'s model, shape (B,), as sums
    over the K values of y (differentiable in the parameters)."""
    K = model.num_classes
    log_q = guide.encoder(x).log_softmax(-1)  # (B, K)
    codes = torch.eye(K)  # (K, K)
    log_lik = model.likelihood(model.decoder(codes).unsqueeze(1)).log_prob(x)  # (K, B)
    log_joint = math.log(1 / K) + log_lik.T  # (B, K)
    elbo = (log_q.exp() * (log_joint - log_q)).sum(-1)
    return elbo, log_joint.logsumexp(-1)
