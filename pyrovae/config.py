"""The training configuration: one flat dataclass, saved as ``config.json`` beside every run."""

import dataclasses
import json
from dataclasses import dataclass, field

from pyrovae.checks import check_float, check_int, check_seed
from pyrovae.errors import ConfigError

# keys that config.json records beside the options, derived from them (not options):
# kl_terms: latent site -> how the estimator treats its KL term (see pyrovae.inference.kl)
RECORDED = ("kl_terms",)

__all__ = ["TrainConfig", "option", "logger_names", "option_text"]


def option_text(value):
    """An option's value as short text for names and labels: lists as ``200,200``, component
    options as ``k=v,...``, a file path (not an import string) by its base name."""
    import os

    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    text = str(value)
    return os.path.basename(text) if (os.sep in text and ":" not in text) else text


def logger_names(text):
    """``"tensorboard,mlflow"`` -> ``["tensorboard", "mlflow"]`` (None -> [])."""
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def option(default, help, **kwargs):
    """A field of :class:`TrainConfig` with its command-line help (``pyrovae train --help``
    is generated from these)."""
    if isinstance(default, dict):
        return field(default_factory=dict, metadata={"help": help, **kwargs})
    return field(default=default, metadata={"help": help, **kwargs})


# --jit: auto (the default), on (--jit alone), off; configs saved while --jit was a flag hold true/false
JIT_MODES = ("auto", "on", "off")
LEGACY_JIT = {True: "on", False: "off"}

PLUGIN = "; or an import string module:Name or path/to/file.py:Name"


@dataclass
class TrainConfig:
    """Every option of ``pyrovae train``; saved as ``config.json`` in the run directory. Each
    field becomes the command-line option ``--field-name`` with the help given here."""

    # data
    data: str = option("digits", "digits, binarized-mnist, mnist, fashion-mnist, or a .npy/.npz path "
                       "(digits needs no download)")
    data_dir: str | None = option(None, "folder holding the data files of binarized-mnist, mnist, fashion-mnist")
    split_seed: int = option(0, "seed of the fixed train/valid/test split, independent of --seed")
    # model and inference, each a registry name
    model: str = option("vae", "model name" + PLUGIN)
    prior: str = option("standard-normal", "prior name" + PLUGIN)
    likelihood: str = option("bernoulli", "bernoulli (binary images) or gaussian" + PLUGIN)
    guide: str = option("amortized", "guide name" + PLUGIN)
    elbo: str = option("trace", "trace, meanfield, tracegraph, enum, iwae, relaxed, stl, iwae-dreg, iwae-stl or vimco"
                       + PLUGIN)
    net: str = option("mlp", "network family of encoder and decoder: mlp or conv" + PLUGIN)
    # keyword options of each component's constructor, e.g. {"num_components": 100} for the prior
    model_options: dict = option({}, "keyword options of the model's constructor")
    prior_options: dict = option({}, "keyword options of the prior's constructor, e.g. num_components=100")
    likelihood_options: dict = option({}, "keyword options of the likelihood's constructor")
    guide_options: dict = option({}, "keyword options of the guide's constructor, e.g. rank=5")
    net_options: dict = option({}, "keyword options of the network family, e.g. channels=16,32")
    elbo_options: dict = option({}, "keyword options of the ELBO class")
    num_particles: int = option(1, "samples per datapoint per step, K for iwae")
    # weights on the KL term (reparameterized estimators: trace, meanfield, stl; see
    # pyrovae.inference.objective_weights); evaluation always reports the unweighted ELBO
    beta: float = option(1.0, "beta-VAE weight of the KL term (Higgins et al. 2017); 1 is the ELBO")
    kl_warmup: int = option(0, "KL warm-up: epochs over which the KL weight rises linearly from 0 to --beta "
                            "(Bowman et al. 2016); 0: none")
    free_bits: float = option(0.0, "free bits: nats per latent dimension below which the minibatch's KL is not "
                              "pushed (Kingma et al. 2016); 0: none")
    # architecture: the IWAE paper's 784-200-200-50 tanh network (Burda et al. 2016, app. C)
    latent_dim: int = option(50, "latent dimension D")
    hidden: tuple = option((200, 200), "hidden layer widths of encoder and decoder, e.g. 200,200")
    activation: str = option("tanh", "tanh, relu, elu, softplus, gelu")
    num_classes: int = option(10, "classes of each discrete latent: m2 labels, mixture-vae components, categories")
    # semi-supervised models (m2)
    num_labels: int = option(100, "m2: class-balanced labelled training examples; the rest are unlabelled")
    aux_weight: float = option(0.1, "m2: classification loss weight alpha / N (Kingma et al. 2014 use 0.1)")
    # the relaxed estimator (Gumbel-softmax / Concrete)
    temperature: float = option(1.0, "relaxed: initial temperature tau (Jang et al. 2017)")
    temperature_min: float = option(0.5, "relaxed: floor of the annealed temperature")
    anneal_rate: float = option(1e-4, "relaxed: tau_t = max(temperature-min, temperature * exp(-rate * t))")
    straight_through: bool = option(False, "relaxed: one-hot forward values with relaxed gradients")
    # optimisation
    epochs: int = option(200, "maximum epochs (the digits run takes about two minutes on 2 cores)")
    batch_size: int = option(100, "minibatch size (Burda et al. 2016)")
    lr: float = option(1e-3, "Adam learning rate (Burda et al. 2016)")
    local_lr: float = option(3e-2, "SparseAdam learning rate of per-example tables (each row moves once per epoch)")
    local_steps: int = option(0, "per-example guide: K updates of the batch's own parameters per decoder update "
                              "(0: joint updates, as SVI)")
    patience: int = option(30, "early stopping: epochs without a better validation ELBO")
    seed: int = option(0, "random seed of initial weights, data order and noise")
    device: str = option("cpu", "cpu or cuda")
    jit: str = option("auto", "trace, meanfield: compile the loss with Pyro's JIT ELBO. auto: where the compiled "
                      "loss and gradients equal the plain ELBO's on the first batch, else run the plain ELBO; on "
                      "(--jit): the same, and say so if it cannot; off: never", choices=JIT_MODES, const="on")
    checkpoint_every: int = option(1, "write last.pt (and a better best.pt) every N epochs, and always at the end "
                                   "and at Ctrl-C/SIGTERM; a run killed between them repeats the epochs since")
    # evaluation at the end of training
    eval_num_samples: int = option(5000, "K of the final test log-likelihood (IWAE); 0 skips it")
    # watching a run (none changes the trained parameters; each may change on --resume)
    track_loglik_every: int = option(0, "every N epochs, the validation log-likelihood (IWAE, K = "
                                     "--track-num-samples) in metrics.jsonl, the loggers and curves.png; 0: never")
    track_num_samples: int = option(100, "K of the tracked validation log-likelihood")
    logger: str | None = option(None, "tensorboard, mlflow or tensorboard,mlflow: also log the metrics, images "
                                "and final results there (metrics.jsonl is always written)")
    tracking_uri: str | None = option(None, "mlflow: the tracking store (default $MLFLOW_TRACKING_URI, else a "
                                      "file store mlruns/ beside the run directory)")
    log_images_every: int = option(10, "loggers: sample and reconstruction images every N epochs; 0: never")

    def __post_init__(self):
        if isinstance(self.hidden, (list, tuple)):
            self.hidden = tuple(self.hidden)
        if isinstance(self.jit, bool):  # jit=True / False, as before auto existed
            self.jit = LEGACY_JIT[self.jit]

    def validate(self, source=None):
        """Check every option's type and range.

        :param source: the file the options were read from; errors then name it and the key
            (``R/config.json: key "latent_dim" ...``) rather than a command-line option.
        :raises ConfigError: naming the option (or the file and key), what it must be, and the value.
        """
        def name(key):
            return f"--{key.replace('_', '-')}" if source is None else f'{source}: key "{key}"'

        for f in dataclasses.fields(self):
            _check_type(name(f.name), getattr(self, f.name), f.type)
        for key in ("latent_dim", "epochs", "batch_size", "num_particles", "num_classes", "patience",
                    "checkpoint_every"):
            check_int(name(key), getattr(self, key), 1)
        for key in ("track_num_samples",):
            check_int(name(key), getattr(self, key), 1)
        for key in ("num_labels", "local_steps", "eval_num_samples", "kl_warmup", "track_loglik_every",
                    "log_images_every"):
            check_int(name(key), getattr(self, key), 0)
        for key in ("lr", "local_lr", "temperature", "temperature_min"):
            check_float(name(key), getattr(self, key), 0, low_open=True)
        for key in ("aux_weight", "anneal_rate", "beta", "free_bits"):
            check_float(name(key), getattr(self, key), 0)
        for key in ("seed", "split_seed"):
            check_seed(name(key), getattr(self, key))
        if self.logger is not None:
            from pyrovae.loggers import LOGGERS

            if not logger_names(self.logger):
                raise ConfigError(f"{name('logger')} names no logger: {self.logger!r}; valid: "
                                  f"{', '.join(LOGGERS.names())} (comma-separated for several)")
            for logger in logger_names(self.logger):
                LOGGERS.resolve(logger)
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ConfigError(f"{name(f.name)} must be one of {', '.join(choices)}, got {getattr(self, f.name)!r}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"{name('device')} must be cpu or cuda, got {self.device!r}")
        return self

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d, source=None):
        """:param source: the file ``d`` was read from, named in errors.
        :raises ConfigError: for keys that are not options, and values of the wrong type."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            import difflib

            where = f"{source}: " if source else ""
            close = {k: difflib.get_close_matches(k, names, 1) for k in unknown}
            hint = "".join(f" ({k!r}: did you mean {m[0]!r}?)" for k, m in close.items() if m)
            raise ConfigError(f"{where}unknown configuration keys {unknown}{hint}; valid keys: {sorted(names)}")
        if isinstance(d.get("jit"), bool):  # a config.json saved when --jit was a flag
            d = {**d, "jit": LEGACY_JIT[d["jit"]]}
        for f in dataclasses.fields(cls):
            if f.name in d:
                _check_type(f"--{f.name.replace('_', '-')}" if source is None else f'{source}: key "{f.name}"',
                            d[f.name], f.type)
        return cls(**d)

    def save(self, path, **record):
        """Write the options as JSON, with ``record``: facts derived from them (see :data:`RECORDED`)."""
        from pyrovae.jsonio import write_json

        write_json(path, {**self.to_dict(), **record})

    @classmethod
    def load(cls, path):
        """:raises ConfigError: if the file is not a JSON object of options."""
        try:
            with open(path) as f:
                d = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"could not read the run's configuration {path}: {err}") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: expected a JSON object of options")
        return cls.from_dict({k: v for k, v in d.items() if k not in RECORDED}, source=path).validate(source=path)


_TYPES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "an object of options",
          tuple: "a list of positive integers (hidden layer widths)"}


def _check_type(name, value, kind):
    """:raises ConfigError: if ``value`` is not of the field type ``kind`` (int, float, str,
    ``str | None``, bool, dict, or tuple of positive ints)."""
    optional = kind not in _TYPES  # str | None
    if optional and value is None:
        return
    kind = str if optional else kind
    ok = {
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
        bool: lambda v: isinstance(v, bool),
        dict: lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v),
        tuple: lambda v: isinstance(v, (list, tuple)) and all(
            isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in v),
    }[kind](value)
    if not ok:
        raise ConfigError(f"{name} must be {_TYPES[kind]}{' or null' if optional else ''}, got {value!r}")
