"""The settings of annealed importance sampling (:mod:`pyrovae.inference.ais`), importable without
torch or Pyro so that the command line can build its options quickly."""

from dataclasses import dataclass

from pyrovae.errors import ConfigError

__all__ = ["AISOptions", "SCHEDULES", "START"]

SCHEDULES = ("sigmoid", "linear")  # of the inverse temperatures beta_t
START = ("guide", "prior")  # pi_0: the guide's q(z|x), or the prior p(z)


@dataclass(frozen=True)
class AISOptions:
    """The settings of :func:`ais` and :func:`reverse_ais` (each a command-line option of
    ``evaluate --method ais``, ``bdmc`` and ``compare-inference --method ais``)."""

    num_steps: int = 1000  # T intermediate distributions; Wu et al. (2017) use 1,000 to 10,000 for VAEs
    num_chains: int = 4  # C independent chains per datapoint
    num_leapfrog: int = 10  # leapfrog steps per HMC transition, as in Wu et al. (2017)
    start: str = "guide"  # pi_0: the guide's q(z|x), or the prior p(z)
    schedule: str = "sigmoid"  # of beta: sigmoid (Grosse et al. 2015) or linear
    target_acceptance: float = 0.65  # a*: near-optimal for HMC (Neal 2011, section 4.4)
    step_size: float = 0.05  # the first pass's starting step size
    adapt_chains: int = 1  # chains per datapoint in the first (adaptation) pass

    def check(self):
        """Raise :class:`ConfigError` naming the option that is out of range."""
        for flag, value in (("--num-steps", self.num_steps), ("--num-chains", self.num_chains),
                            ("--num-leapfrog", self.num_leapfrog), ("--adapt-chains", self.adapt_chains)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{flag} must be a positive integer, got {value!r}")
        if not 0 < self.target_acceptance < 1:
            raise ConfigError(f"--target-acceptance must lie in (0, 1), got {self.target_acceptance}")
        if not self.step_size > 0:
            raise ConfigError(f"--step-size must be positive, got {self.step_size}")
        if self.start not in START:
            raise ConfigError(f"unknown --ais-start {self.start!r}; valid: {', '.join(START)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown --schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        return self

    def tag(self):
        """A file-name part: ``ais_T1000_C4`` (``_prior`` when it starts at the prior)."""
        return f"ais_T{self.num_steps}_C{self.num_chains}" + ("_prior" if self.start == "prior" else "")
