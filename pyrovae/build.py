"""Build a model and guide from a :class:`~pyrovae.config.TrainConfig` through the registries."""

from pyrovae.errors import ConfigError
from pyrovae.inference.elbos import ELBOS, make_elbo
from pyrovae.inference.guides import guides_for
from pyrovae.inference.objective_weights import WEIGHTABLE, FreeBits_ELBO, KLWeighted
from pyrovae.local import localize_
from pyrovae.models import LIKELIHOODS, MODELS, PRIORS
from pyrovae.nets import NETS, traceable_params_
from pyrovae.registry import check_options, construct, lookup

__all__ = ["build_model_and_guide", "build_elbo"]


def build_model_and_guide(config, num_pixels, num_data=None, image_shape=None):
    """:returns: ``(model, guide)`` for data with ``num_pixels`` pixels of ``image_shape``
    ((H, W), or None) and ``num_data`` training examples (the size of per-example guides'
    tables). Their parameters are :class:`~pyro.nn.PyroParam` s
    (:func:`~pyrovae.nets.traceable_params_`).

    Each component is resolved by name (a registry name, an entry point or an import string,
    see :mod:`pyrovae.registry`) and built with the fixed arguments below plus its
    ``config.<kind>_options``:

    * likelihood: ``Likelihood(num_pixels, **options)``
    * network family: ``Family(num_pixels, image_shape, hidden, activation, **options)``
    * prior: ``Prior(latent_dim, **options)``
    * model: ``Model(prior, likelihood, latent_dim, hidden, activation, num_classes=, nets=, **options)``
    * guide: ``Guide(model, hidden, activation, num_data, nets=, **options)``

    (``nets=`` and ``num_classes=`` only where the constructor takes them).

    :raises UnknownNameError: for an unknown model, prior, likelihood, network or guide name (the
        guide names are those that apply to the model).
    :raises PluginError: for an import string or entry point that does not load.
    :raises ConfigError: for an unknown or ill-typed option, ``--prior`` with a model that owns its
        prior, a prior that needs an encoder with a guide without one, or ``--local-steps`` with a
        guide without per-example parameters.
    """
    likelihood = construct(LIKELIHOODS, config.likelihood, "likelihood", num_pixels,
                           options=config.likelihood_options, fixed=("num_pixels",))
    nets = construct(NETS, config.net, "net", num_pixels, image_shape, config.hidden, config.activation,
                     options=config.net_options, fixed=("num_pixels", "image_shape", "hidden", "activation"))
    model_cls = lookup(MODELS, config.model, "model")
    if getattr(model_cls, "owns_prior", False) and config.prior != "standard-normal":
        raise ConfigError(f"model {config.model!r} has its own prior; drop --prior {config.prior}")
    prior = construct(PRIORS, config.prior, "prior", config.latent_dim, options=config.prior_options,
                      fixed=("latent_dim",))
    model = construct(MODELS, config.model, "model", prior, likelihood, config.latent_dim, config.hidden,
                      config.activation, options=config.model_options,
                      fixed=("prior", "likelihood", "latent_dim", "hidden", "activation"),
                      num_classes=config.num_classes, nets=nets)
    guide = construct(guides_for(config.model), config.guide, f"guide for model {config.model!r}", model,
                      config.hidden, config.activation, num_data, options=config.guide_options,
                      fixed=("model", "hidden", "activation", "num_data"), nets=nets)
    if hasattr(prior, "attach"):  # priors made from the guide's encoder (VampPrior)
        prior.attach(guide, num_pixels)
    if config.local_steps and not getattr(guide, "local_tables", ()):
        raise ConfigError(f"--local-steps needs a guide with per-example parameters (per-example), "
                          f"not {config.guide!r}")
    traceable_params_(model), traceable_params_(guide)  # so that --jit can compile the loss
    localize_(model), localize_(guide)  # plugins' plain PyroModules keep their parameters local too
    return model, guide


def build_elbo(config, model, steps_per_epoch=1):
    """The configured Pyro ELBO, checked against the model; with ``beta``, ``kl_warmup`` or
    ``free_bits`` set, the estimator with its KL term weighted
    (:mod:`pyrovae.inference.objective_weights`), its warm-up ``kl_warmup * steps_per_epoch`` steps.

    :raises ConfigError: for ``enum`` with a model without enumerable discrete sites, or another
        estimator with a model whose ELBO needs enumeration; for KL weights with an estimator
        other than trace, meanfield and stl (free bits: trace only).
    :raises UnknownNameError: for an unknown ELBO name.
    """
    check_options(lookup(ELBOS, config.elbo, "ELBO"), config.elbo_options, "elbo", config.elbo,
                  fixed=("num_particles", "vectorize_particles", "max_plate_nesting"))
    options = {}
    if config.elbo == "relaxed":
        options = dict(temperature=config.temperature, temperature_min=config.temperature_min,
                       anneal_rate=config.anneal_rate, straight_through=config.straight_through)
    elbo = make_elbo(config.elbo, config.num_particles, model.max_plate_nesting, **options,
                     **config.elbo_options)
    elbo = _weighted(config, elbo, steps_per_epoch)
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
    reparameterized_only = config.elbo in ("meanfield", "iwae") or getattr(elbo, "reparameterized_only", False)
    if discrete and reparameterized_only and not getattr(model, "requires_enum", False):
        raise ConfigError(f"--elbo {config.elbo} has no gradient estimator for the discrete sites {discrete} of "
                          f"model {config.model!r}; use enum, tracegraph or relaxed")
    return elbo


def _weighted(config, elbo, steps_per_epoch):
    """``elbo`` with the configured KL weights, or ``elbo`` itself at the defaults (today's losses)."""
    if config.beta == 1 and not config.kl_warmup and not config.free_bits:
        return elbo
    if config.elbo not in WEIGHTABLE:
        raise ConfigError(f"--beta, --kl-warmup and --free-bits weight the KL term of a reparameterized ELBO "
                          f"({', '.join(WEIGHTABLE)}); --elbo {config.elbo} has none to weight")
    if config.free_bits:
        if config.elbo != "trace":
            raise ConfigError(f"--free-bits floors the Monte Carlo KL per dimension: use it with --elbo trace, "
                              f"not {config.elbo}")
        elbo = FreeBits_ELBO(config.free_bits, num_particles=elbo.num_particles,
                             max_plate_nesting=elbo.max_plate_nesting, vectorize_particles=elbo.vectorize_particles)
    return KLWeighted(elbo, config.beta, config.kl_warmup * steps_per_epoch)
