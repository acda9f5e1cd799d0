"""Build a model and guide from a :class:`~pyrovae.config.TrainConfig` through the registries."""

from pyrovae.errors import ConfigError
from pyrovae.inference.elbos import make_elbo
from pyrovae.inference.guides import GUIDES
from pyrovae.models import LIKELIHOODS, MODELS, PRIORS
from pyrovae.registry import lookup

__all__ = ["build_model_and_guide", "build_elbo"]


def build_model_and_guide(config, num_pixels, num_data=None):
    """:returns: ``(model, guide)`` for data with ``num_pixels`` pixels and ``num_data``
    training examples (the size of per-example guides' tables).

    :raises UnknownNameError: for an unknown model, prior, likelihood or guide name.
    """
    likelihood = lookup(LIKELIHOODS, config.likelihood, "likelihood")(num_pixels)
    prior = lookup(PRIORS, config.prior, "prior")(config.latent_dim)
    model_cls = lookup(MODELS, config.model, "model")
    guide_cls = lookup(GUIDES, config.guide, "guide")
    model = model_cls(prior, likelihood, config.latent_dim, config.hidden, config.activation)
    guide = guide_cls(model, config.hidden, config.activation, num_data)
    if config.local_steps and not getattr(guide, "local_tables", ()):
        raise ConfigError(f"--local-steps needs a guide with per-example parameters (per-example), "
                          f"not {config.guide!r}")
    return model, guide


def build_elbo(config, model):
    """The configured Pyro ELBO, checked against the model.

    :raises ConfigError: for ``enum`` with a model that has no discrete latent sites.
    :raises UnknownNameError: for an unknown ELBO name.
    """
    elbo = make_elbo(config.elbo, config.num_particles, model.max_plate_nesting)
    if config.elbo == "enum" and not getattr(model, "discrete_sites", ()):
        raise ConfigError(
            f"--elbo enum sums out discrete latent variables, and model {config.model!r} has none; "
            "use --elbo trace or meanfield"
        )
    return elbo
