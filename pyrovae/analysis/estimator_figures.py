"""Figures of ``pyrovae compare-estimators``: gradient variance and SNR bars, ELBO against seconds."""

import numpy as np

from pyrovae.figure import subplots

__all__ = ["variance_figure", "training_figure"]


def variance_figure(path, report):
    """Two panels of grouped bars on a log scale: the variance (trace of the covariance) and the
    SNR of each estimator's gradient, one bar per parameter group. Exact estimators (zero
    variance, infinite SNR) have no bar. :returns: ``path``."""
    names = list(report["estimators"])
    groups = list(report["parameters"])
    fig, axes = subplots(1, 2, figsize=(max(8, 1.3 * len(names) + 3), 4))
    width = 0.8 / len(groups)
    pos = np.arange(len(names))
    for ax, key, label in ((axes[0], "variance", "variance: trace of Cov[gradient]"),
                           (axes[1], "snr", "SNR: |mean| / sqrt(variance)")):
        for j, group in enumerate(groups):
            values = [report["estimators"][n]["groups"][group][key] for n in names]
            heights = [v if v else np.nan for v in values]  # 0 / None (exact) cannot go on a log scale
            ax.bar(pos + (j - (len(groups) - 1) / 2) * width, heights, width, label=group)
        ax.set_yscale("log")
        ax.set_xticks(pos, names, rotation=30, ha="right", fontsize=8)
        ax.set_title(label, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, title="parameters", title_fontsize=8)
    fig.suptitle(f"{report['model']} ({report['checkpoint']}), {report['num_draws']} gradient draws on a fixed "
                 f"minibatch of {report['batch_size']}", fontsize=10)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def training_figure(path, report):
    """Validation ELBO (nats per datapoint) against seconds of training steps, one line per
    estimator, from the same initial parameters. :returns: ``path``."""
    training = report["training"]
    fig, ax = subplots(figsize=(7, 4.2))
    finals = []
    for name, curve in training["curves"].items():
        label = f"{name} ({curve['steps']} steps{', diverged' if curve['diverged'] else ''})"
        ax.plot(curve["seconds"], curve["valid_elbo"], marker=".", label=label)
        finals.append(curve["valid_elbo"][-1])
    values = [v for c in training["curves"].values() for v in c["valid_elbo"] if v == v]
    spread = max(finals) - min(finals)
    ax.set_ylim(max(min(values), min(finals) - max(5.0, spread)), max(values) + 1)  # the late curves, not the start
    ax.set_xlabel("seconds of training steps (evaluation not counted)")
    ax.set_ylabel("validation ELBO (nats per datapoint)")
    ax.set_title(f"{report['model']}: equal-time training, {training['budget_seconds']:g} s per estimator",
                 fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path
