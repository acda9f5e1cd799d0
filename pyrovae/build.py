"""Build a model and guide from a :class:`~pyrovae.config.TrainConfig` through the registries."""

from pyrovae.errors import ConfigError
from pyrovae.inference.elbos import make_elbo
from pyrovae.inference.guides import guides_for
from pyrovae.models import LIKELIHOODS, MODELS, PRIORS
from pyrovae.nets import traceable_params_
from pyrovae.registry import lookup

__all__ = ["build_model_and_guide", "build_elbo"]


def build_model_and_guide(config, num_pixels, num_data=None):
    """:returns: ``(model, guide)`` for data with ``num_pixels`` pixels and ``num_data``
    training examples (the size of per-example guides' tables). Their parameters are
    :class:`~pyro.nn.PyroParam` s (:func:`~pyrovae.nets.traceable_params_`).

    :raises UnknownNameError: for an unknown model, prior, likelihood or guide name (the guide
        names are those that apply to the model).
    :raises ConfigError: for ``--prior`` with a model that owns its prior, a prior that needs an
        encoder with a guide without one, or ``--local-steps`` with a guide without per-example
        parameters.
    """
    likelihood = lookup(LIKELIHOODS, config.likelihood, "likelihood")(num_pixels)
    model_cls = lookup(MODELS, config.model, "model")
    if getattr(model_cls, "owns_prior", False) and config.prior != "standard-normal":
        raise ConfigError(f"model {config.model!r} has its own prior; drop --prior {config.prior}")
    prior = lookup(PRIORS, config.prior, "prior")(config.latent_dim)
    guide_cls = lookup(guides_for(config.model), config.guide, f"guide for model {config.model!r}")
    model = model_cls(prior, likelihood, config.latent_dim, config.hidden, config.activation,
                      num_classes=config.num_classes)
    guide = guide_cls(model, config.hidden, config.activation, num_data)
    if hasattr(prior, "attach"):  # priors made from the guide's encoder (VampPrior)
        prior.attach(guide, num_pixels)
    if config.local_steps and not getattr(guide, "local_tables", ()):
        raise ConfigError(f"--local-steps needs a guide with per-example parameters (per-example), "
                          f"not {config.guide!r}")
    traceable_params_(model), traceable_params_(guide)  # so that --jit can compile the loss
    return model, guide


def build_elbo(config, model):
    """The configured Pyro ELBO, checked against the model.

    :raises ConfigError: for ``enum`` with a model without enumerable discrete sites, or another
        estimator with a model whose ELBO needs enumeration.
    :raises UnknownNameError: for an unknown ELBO name.
    """
    options = {}
    if config.elbo == "relaxed":
        options = dict(temperature=config.temperature, temperature_min=config.temperature_min,
                       anneal_rate=config.anneal_rate, straight_through=config.straight_through)
    elbo = make_elbo(config.elbo, config.num_particles, model.max_plate_nesting, **options)
    discrete = getattr(model, "discrete_sites", ())
    if config.elbo == "enum" and not (discrete and getattr(model, "enumerable", False)):
        raise ConfigError(
            f"--elbo enum sums out discrete latent variables, and model {config.model!r} has none that "
            "can be enumerated; use --elbo trace or meanfield for continuous latents, tracegraph or "
            "relaxed for large discrete ones"
        )
    if getattr(model, "requires_enum", False) and config.elbo != "enum":
        raise ConfigError(f"model {config.model!r} sums its discrete site {discrete} out exactly; use --elbo enum")
    if config.elbo == "meanfield" and not getattr(model, "mean_field", True):
        raise ConfigError(f"--elbo meanfield puts each latent site's KL in closed form, which is biased when the "
                          f"guide draws one site given another, as model {config.model!r}'s does; use --elbo trace "
                          "or iwae")
    if discrete and config.elbo in ("meanfield", "iwae") and not getattr(model, "requires_enum", False):
        raise ConfigError(f"--elbo {config.elbo} has no gradient estimator for the discrete sites {discrete} of "
                          f"model {config.model!r}; use enum, tracegraph or relaxed")
    return elbo
