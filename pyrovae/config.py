"""The training configuration: one flat dataclass, saved as ``config.json`` beside every run."""

import dataclasses
import json
import math
from dataclasses import dataclass, field

from pyrovae.errors import ConfigError

# keys that config.json records beside the options, derived from them (not options):
# kl_terms: latent site -> how the estimator treats its KL term (see pyrovae.inference.kl)
RECORDED = ("kl_terms",)

__all__ = ["TrainConfig"]


@dataclass
class TrainConfig:
    # data
    data: str = "digits"  # a name in pyrovae.data.DATASETS or a .npy/.npz path; digits needs no download
    data_dir: str | None = None  # folder of the MNIST-style files
    split_seed: int = 0  # fixed train/valid/test permutation, independent of the training seed
    # model and inference, each a registry name
    model: str = "vae"
    prior: str = "standard-normal"
    likelihood: str = "bernoulli"  # binary images
    guide: str = "amortized"
    elbo: str = "trace"  # reparameterization gradients, the standard VAE estimator
    net: str = "mlp"  # network family of encoder and decoder (pyrovae.nets.NETS)
    # keyword options of each component's constructor, e.g. {"num_components": 100} for the prior
    model_options: dict = field(default_factory=dict)
    prior_options: dict = field(default_factory=dict)
    likelihood_options: dict = field(default_factory=dict)
    guide_options: dict = field(default_factory=dict)
    net_options: dict = field(default_factory=dict)
    elbo_options: dict = field(default_factory=dict)  # keyword arguments of the ELBO class
    num_particles: int = 1  # samples per datapoint per step (K for iwae)
    # architecture: the IWAE paper's 784-200-200-50 tanh network (Burda et al. 2016, app. C)
    latent_dim: int = 50
    hidden: tuple = (200, 200)
    activation: str = "tanh"
    num_classes: int = 10  # classes of each discrete latent: M2 labels, mixture components, categories
    # semi-supervised models (m2)
    num_labels: int = 100  # class-balanced labelled training examples; the rest are unlabelled
    aux_weight: float = 0.1  # alpha / N of the classification loss (Kingma et al. 2014 use alpha = 0.1 N)
    # the relaxed estimator (Gumbel-softmax / Concrete)
    temperature: float = 1.0  # initial tau (Jang et al. 2017)
    temperature_min: float = 0.5  # floor of the annealed tau
    anneal_rate: float = 1e-4  # tau_t = max(temperature_min, temperature * exp(-anneal_rate * t))
    straight_through: bool = False  # one-hot forward values, relaxed gradients
    # optimisation
    epochs: int = 200  # the default digits run takes well under a minute on 2 cores
    batch_size: int = 100  # Burda et al. 2016
    lr: float = 1e-3  # Adam, Burda et al. 2016
    local_lr: float = 3e-2  # SparseAdam on per-example tables: each row moves once per epoch, so faster
    local_steps: int = 0  # per-example guide: 0 = joint updates (SVI); K = K local updates per decoder update
    patience: int = 30  # early stopping: epochs without a better validation ELBO
    seed: int = 0
    device: str = "cpu"
    jit: bool = False  # trace and meanfield: Pyro's JIT-compiled ELBO (see pyrovae.inference.jit)
    # evaluation at the end of training
    eval_num_samples: int = 5000  # K of the IWAE estimate of log p(x) (Burda et al. 2016 use 5000)

    def __post_init__(self):
        self.hidden = tuple(self.hidden)

    def validate(self):
        """:raises ConfigError: for a non-positive size, rate or count, naming the option."""
        positive = {
            "latent_dim": self.latent_dim, "epochs": self.epochs, "batch_size": self.batch_size,
            "num_particles": self.num_particles, "lr": self.lr, "local_lr": self.local_lr,
            "num_classes": self.num_classes, "temperature": self.temperature,
            "temperature_min": self.temperature_min,
        }
        for name, value in positive.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}")
        for name in ("num_labels", "aux_weight", "anneal_rate"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.local_steps < 0:
            raise ConfigError(f"--local-steps must be >= 0, got {self.local_steps}")
        if self.patience < 1:
            raise ConfigError(f"--patience must be at least 1, got {self.patience}")
        if self.eval_num_samples < 0:
            raise ConfigError(f"--eval-num-samples must be >= 0 (0 skips), got {self.eval_num_samples}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"--device must be cpu or cuda, got {self.device!r}")
        return self

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d):
        """:raises ConfigError: for keys that are not options."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown configuration keys {unknown}; valid keys: {sorted(names)}")
        return cls(**d)

    def save(self, path, **record):
        """Write the options as JSON, with ``record``: facts derived from them (see :data:`RECORDED`)."""
        from pyrovae.checkpoint import atomic_write_text

        atomic_write_text(path, json.dumps({**self.to_dict(), **record}, indent=2) + "\n")

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
        return cls.from_dict({k: v for k, v in d.items() if k not in RECORDED})
