"""``pyrovae compare-runs``: finished runs side by side, grouped by their settings, over seeds.

Runs whose options differ only in ``seed`` (and in options that do not change what is trained:
device, JIT, loggers, tracking) form a group. For each group, the mean ± standard deviation over
its runs of: test log-likelihood and test ELBO (nats per datapoint, from ``summary.json``),
active units, the share of test images with PSIS k-hat above 0.7, parameters (model + guide)
and training time. Groups are labelled by the options that set them apart. The table is text,
Markdown or CSV; the figure shows every run's validation ELBO per epoch (and the tracked
validation log-likelihood, where there is one), one colour per group.
"""

import csv
import io
import math
import os
from typing import NamedTuple

from pyrovae.config import TrainConfig, option_text
from pyrovae.errors import ConfigError
from pyrovae.jsonio import read_jsonl
from pyrovae.runs.rundir import CONFIG, METRICS, SUMMARY

__all__ = ["RunRecord", "Group", "find_runs", "group_runs", "format_table", "plot_curves", "IGNORED"]

# options that do not change what is trained or evaluated: runs differing only in these group together
IGNORED = ("seed", "device", "jit", "logger", "tracking_uri", "log_images_every", "track_loglik_every",
           "track_num_samples")
COLUMNS = [("log_likelihood", "test log-likelihood", "{:.2f}"), ("elbo", "test ELBO", "{:.2f}"),
           ("active_units", "active units", "{:.1f}"), ("khat_share", "k-hat > 0.7", "{:.0%}"),
           ("parameters", "parameters", "{:,.0f}"), ("minutes", "training (min)", "{:.2f}")]


class RunRecord(NamedTuple):
    path: str  #: the run directory
    config: dict  #: its options
    values: dict  #: column key -> number (or None), see :data:`COLUMNS`


class Group(NamedTuple):
    label: str  #: the options that set the group apart, e.g. ``guide=iaf``
    runs: list  #: its :class:`RunRecord` s
    stats: dict  #: column key -> (mean, sd over runs; NaN for one run)


def find_runs(paths):
    """Run directories under ``paths``: each path that holds ``config.json``, and the folders
    directly inside the others (a sweep's folder). Returns ``(finished, unfinished)`` lists of
    paths; a run is finished when it has ``summary.json``.

    :raises ConfigError: for a path that does not exist or holds no run.
    """
    found = []
    for path in paths:
        if not os.path.isdir(path):
            raise ConfigError(f"compare-runs: {path} is not a folder")
        if os.path.isfile(os.path.join(path, CONFIG)):
            found.append(path)
            continue
        inside = sorted(os.path.join(path, n) for n in os.listdir(path)
                        if os.path.isfile(os.path.join(path, n, CONFIG)))
        if not inside:
            raise ConfigError(f"compare-runs: {path} holds no run (no {CONFIG} in it or in its folders)")
        found += inside
    finished = [p for p in found if os.path.isfile(os.path.join(p, SUMMARY))]
    return finished, [p for p in found if p not in finished]


def read_run(path):
    """A :class:`RunRecord` from a finished run's ``config.json`` and ``summary.json``."""
    import json

    config = TrainConfig.load(os.path.join(path, CONFIG)).to_dict()
    summary = os.path.join(path, SUMMARY)
    try:
        with open(summary) as f:
            s = json.load(f)
        test = s.get("test") or {}
        values = {"log_likelihood": test.get("log_likelihood"), "elbo": test.get("elbo"),
                  "active_units": test.get("active_units"), "khat_share": test.get("khat_share_above_0.7"),
                  "parameters": sum(s["parameters"].values()), "minutes": s["training_seconds"] / 60}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ConfigError(f"compare-runs: {summary} is not a run summary ({type(err).__name__}: {err}); "
                          "delete it and resume the run (pyrovae train --out RUN --resume) to write it again") from None
    return RunRecord(path, config, values)


def _stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return (None, None)
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else math.nan
    return (mean, sd)


def group_runs(records):
    """:class:`Group` s of ``records`` (see the module doc), in the order their first run appears."""
    groups = {}
    for r in records:
        key = tuple(sorted((k, repr(v)) for k, v in r.config.items() if k not in IGNORED))
        groups.setdefault(key, []).append(r)
    keys = list(groups)
    varying = [k for k in (dict(keys[0]) if keys else {}) if len({dict(g)[k] for g in keys}) > 1]
    out = []
    for key, runs in groups.items():
        config = runs[0].config
        label = ", ".join(f"{k}={option_text(config[k])}" for k in varying) or "all runs"
        out.append(Group(label, runs, {c: _stats([r.values[c] for r in runs]) for c, _, _ in COLUMNS}))
    return out


def _cell(stat, fmt, sd=True):
    mean, spread = stat
    if mean is None:
        return "-"
    text = fmt.format(mean)
    if sd and spread is not None and not math.isnan(spread):
        text += " ± " + fmt.format(spread).rstrip("%") + ("%" if fmt.endswith("%}") else "")
    return text


def format_table(groups, fmt="text"):
    """The table as ``text`` (aligned columns), ``markdown`` or ``csv`` (mean and sd columns)."""
    header = ["runs", "settings"] + [name for _, name, _ in COLUMNS]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["settings", "runs"] + [f"{k}_{s}" for k, _, _ in COLUMNS for s in ("mean", "sd")])
        for g in groups:
            w.writerow([g.label, len(g.runs)] + [("" if v is None or (isinstance(v, float) and math.isnan(v)) else v)
                                                  for k, _, _ in COLUMNS for v in g.stats[k]])
        return buf.getvalue()
    rows = [[str(len(g.runs)), g.label] + [_cell(g.stats[k], f) for k, _, f in COLUMNS] for g in groups]
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"
    if fmt != "text":
        raise ConfigError(f"unknown --format {fmt!r}; valid: text, markdown, csv")
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    line = "  ".join
    return "\n".join(line(c.ljust(w) if i == 1 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in [header] + rows) + "\n"


def plot_curves(groups, path):
    """Every run's validation ELBO per epoch (solid) and tracked validation log-likelihood
    (dots), one colour per group; writes ``path`` (PNG)."""
    from pyrovae.figure import subplots

    fig, ax = subplots(figsize=(7, 4))
    colours = [f"C{i % 10}" for i in range(len(groups))]
    lows, any_tracked = [], False
    for group, colour in zip(groups, colours):
        for i, run in enumerate(group.runs):
            rows = read_jsonl(os.path.join(run.path, METRICS))
            if not rows:
                continue
            ax.plot([r["epoch"] for r in rows], [r["valid_elbo"] for r in rows], color=colour, linewidth=1,
                    alpha=0.8, label=group.label if i == 0 else None)
            lows.append(sorted(r["valid_elbo"] for r in rows)[len(rows) // 10])
            tracked = [r for r in rows if r.get("valid_log_likelihood") is not None]
            if tracked:
                any_tracked = True
                ax.plot([r["epoch"] for r in tracked], [r["valid_log_likelihood"] for r in tracked], "o",
                        color=colour, markersize=3)
    if lows:
        ax.set_ylim(bottom=min(lows))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation ELBO (nats per datapoint)")
    ax.set_title("validation ELBO per run" + (" (lines); tracked validation log-likelihood (dots)" if any_tracked
                                              else ""), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path
