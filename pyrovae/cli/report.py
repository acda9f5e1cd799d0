"""The text reports the commands print (nats per datapoint)."""

__all__ = ["label_lines", "estimator_lines"]


def label_lines(report, baseline=None):
    """Human-readable lines for the label metrics of an evaluation report, if any, beside the
    labels-only baseline of a semi-supervised run."""
    if "accuracy" in report:
        yield (f"test accuracy of q(y | x): {report['accuracy']:.1%}" + (
            f"; the same classifier trained on the {baseline['num_labels']} labels alone: "
            f"{baseline['accuracy_labelled_only']:.1%}" if baseline else ""))
    if "clustering_accuracy" in report:
        yield (f"clustering accuracy (best matching of components to labels): {report['clustering_accuracy']:.1%}; "
               f"NMI {report['nmi']:.3f}")


def estimator_lines(r):
    """The text report of ``pyrovae compare-estimators``."""
    yield (f"{r['model']} ({r['checkpoint']}), {r['num_draws']} gradient draws on a fixed minibatch of "
           f"{r['batch_size']} {r['split']} examples; gradients of the mean negative objective per datapoint")
    first = next(iter(r["estimators"].values()))["groups"]
    yield f"var ratio: variance / variance of {next(iter(first.values()))['variance_reference']}"
    yield (f"{'estimator':22}{'group':>9}{'|mean|':>11}{'variance':>11}{'var ratio':>10}{'SNR':>9}"
           f"{'ms/grad':>9}{'peak MiB':>10}")
    for name, e in r["estimators"].items():
        mem = e["peak_memory_bytes"]
        for j, (group, g) in enumerate(e["groups"].items()):
            cost = (f"{1000 * e['seconds_per_gradient']:>9.2f}{'-' if not mem else f'{mem / 2**20:.0f}':>10}"
                    if j == 0 else "")
            ratio = "-" if g["variance_ratio"] is None else f"{g['variance_ratio']:.3g}"
            snr = "inf" if g["snr"] is None else f"{g['snr']:.3g}"
            yield (f"{name if j == 0 else '':22}{group:>9}{g['mean_norm']:>11.3g}{g['variance']:>11.3g}"
                   f"{ratio:>10}{snr:>9}" + cost)
    for name, why in r["skipped"].items():
        yield f"{name}: not applicable ({why})"
    if r["bias_checks"]:
        yield f"bias check: z-tests of mean gradients against the reference, projected on its mean and on a " \
              f"random direction; agreement when |z| < {r['z_critical']}"
    for c in r["bias_checks"]:
        verdict = "agrees" if c["agrees"] else "DIFFERS"
        line = (f"  {c['estimator']:20} vs {c['reference']:10}{c['group']:>9}  z = {c['z_signal']:+7.2f}, "
                f"{c['z_random']:+7.2f}  {verdict}")
        if "relative_bias" in c and c["relative_bias"] is not None:
            line += f"; bias {c['relative_bias']:.1%} of |mean|"
        yield line
    for name, curve in r.get("training", {}).get("curves", {}).items():
        yield (f"equal-time training, {r['training']['budget_seconds']:g} s: {name:20} {curve['steps']:>7} steps, "
               f"validation ELBO {curve['valid_elbo'][-1]:.3f}" + (" (diverged)" if curve["diverged"] else ""))


