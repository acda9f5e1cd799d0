"""``pyrovae impute``: hide pixels of test images, infer z from the rest, fill them in.

For each chosen test image a mask hides pixels (``random``: each pixel independently with
probability ``missing_fraction``; ``top`` or ``bottom``: that half of the image). z is
inferred from the observed pixels only, the likelihood masked on the missing ones:

* ``per-example`` (default): per-example Gaussians started at the encoder's output (the
  encoder reads the image with missing pixels filled by their training means) and refined
  for ``steps`` Adam steps on the masked ELBO, model frozen (Kim et al. 2018's VAE+SVI);
* ``encoder``: the encoder's q alone, on the filled image.

Missing pixels are filled from the posterior predictive by importance sampling
(:mod:`pyrovae.inference.imputation`). Reported, averaged over images:
``missing_log_likelihood`` (log p-hat(x_m | x_o), nats per image, and per missing pixel),
``missing_error`` (for binary data, the share of missing pixels wrong when the predictive
mean is thresholded at 0.5) and ``missing_mse`` (squared error of the predictive mean), beside
a baseline that fills each pixel with its training mean (the likelihood at the mean pixel
value, independent of the observed pixels).
"""

import os
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from pyrovae.errors import ConfigError
from pyrovae.figure import subplots
from pyrovae.inference.guides import gaussian_params
from pyrovae.inference.imputation import impute_batch
from pyrovae.inference.local_fit import fit_local
from pyrovae.jsonio import write_json
from pyrovae.runs.load import load_run

__all__ = ["make_mask", "impute_run", "Imputation", "MASKS", "METHODS"]

MASKS = ("random", "top", "bottom")
METHODS = ("per-example", "encoder")


class Imputation(NamedTuple):
    report: dict  #: the numbers (see the module doc), also in ``path``
    path: str  #: JSON in the run directory
    figure: str  #: PNG: masked input, imputation, truth


def make_mask(kind, num_examples, num_pixels, image_shape=None, missing_fraction=0.5, generator=None):
    """A bool mask (N, P), True where a pixel is observed.

    :raises ConfigError: for an unknown kind, a fraction outside (0, 1), or top/bottom
        without an image shape.
    """
    if kind not in MASKS:
        raise ConfigError(f"unknown mask {kind!r}; valid masks: {', '.join(MASKS)}")
    if kind == "random":
        if not 0 < missing_fraction < 1:
            raise ConfigError(f"--missing-fraction must lie strictly between 0 and 1, got {missing_fraction}")
        return torch.rand(num_examples, num_pixels, generator=generator) >= missing_fraction
    if image_shape is None:
        raise ConfigError(f"--mask {kind} needs images; this data has no image shape: use --mask random")
    h, w = image_shape
    rows = torch.arange(h)[:, None].expand(h, w).reshape(-1)
    observed = rows >= h // 2 if kind == "top" else rows < h // 2
    return observed.expand(num_examples, num_pixels).clone()


def impute_run(run_dir, mask="random", missing_fraction=0.5, method="per-example", num_examples=1000,
               steps=200, lr=0.05, num_samples=1000, split="test", seed=0, checkpoint="best", batch_size=100,
               device="cpu", progress=None):
    """Impute hidden pixels of ``num_examples`` random images of ``split``; see the module doc.

    :returns: an :class:`Imputation`; its report is written to ``impute_{split}_{checkpoint}_{mask}_{method}.json``.
    :raises ConfigError: for an unknown mask or method, or a bad fraction or count.
    :raises CheckpointError, DataError: for a bad run directory or unreadable data.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    if num_examples < 1 or num_samples < 1 or steps < 0:
        raise ConfigError("--num-examples and --num-samples must be positive and --steps non-negative")
    config, model, guide, state, data = load_run(run_dir, checkpoint, device)
    gen = torch.Generator().manual_seed(seed)
    part = data.split(split)
    pick = torch.randperm(len(part), generator=gen)[:num_examples]
    x_all = part.x[pick]
    masks = make_mask(mask, len(x_all), data.num_pixels, data.image_shape, missing_fraction, gen)
    train_mean = data.train.x.mean(0)
    baseline = model.likelihood(model.likelihood.output_for_mean(train_mean).to(device)).base_dist
    binary = model.likelihood.binary

    sums = {k: 0.0 for k in ("ll", "ll_base", "err", "err_base", "se", "se_base", "missing")}
    figure_rows = None
    torch.manual_seed(seed)
    bar = tqdm(total=len(x_all), desc=f"impute ({method})", unit="image",
               disable=None if progress is None else not progress)
    for start in range(0, len(x_all), batch_size):
        x = x_all[start : start + batch_size].to(device)
        m = masks[start : start + batch_size].to(device)
        filled = torch.where(m, x, train_mean.to(device))
        if method == "encoder":
            q, q_input = guide, filled
        else:
            loc, scale = gaussian_params(guide, filled)
            q, _ = fit_local(model, x, loc, scale, steps=steps, lr=lr, mask=m)
            q_input = x
        result = impute_batch(model, q, x, m, num_samples, guide_input=q_input)
        missing = (~m).to(x.dtype)
        base_ll = (baseline.log_prob(x) * missing).sum(-1)
        sums["ll"] += result.log_likelihood_missing.sum().item()
        sums["ll_base"] += base_ll.sum().item()
        sums["missing"] += missing.sum().item()
        for key, pred in (("", result.mean), ("_base", train_mean.to(device).expand_as(x))):
            sums["se" + key] += (((pred - x) ** 2) * missing).sum().item()
            if binary:
                sums["err" + key] += (((pred > 0.5).to(x.dtype) != x).to(x.dtype) * missing).sum().item()
        if figure_rows is None:
            n = min(8, len(x))
            shown = torch.where(m[:n], x[:n], torch.full_like(x[:n], 0.5))
            imputed = torch.where(m[:n], x[:n], result.mean[:n])
            figure_rows = (shown.cpu(), imputed.cpu(), x[:n].cpu())
        bar.update(len(x))
    bar.close()

    n, pixels = len(x_all), max(sums["missing"], 1)
    report = {
        "split": split, "num_examples": n, "mask": mask, "method": method, "steps": steps if method != "encoder" else 0,
        "num_samples": num_samples, "seed": seed,
        "missing_fraction": sums["missing"] / (n * data.num_pixels),
        "missing_log_likelihood": sums["ll"] / n,
        "missing_log_likelihood_per_pixel": sums["ll"] / pixels,
        "baseline_missing_log_likelihood": sums["ll_base"] / n,
        "baseline_missing_log_likelihood_per_pixel": sums["ll_base"] / pixels,
        "missing_mse": sums["se"] / pixels,
        "baseline_missing_mse": sums["se_base"] / pixels,
        "units": "nats per image (and per missing pixel)",
    }
    if binary:
        report["missing_error"] = sums["err"] / pixels
        report["baseline_missing_error"] = sums["err_base"] / pixels
    report["checkpoint"] = checkpoint
    stem = f"impute_{split}_{checkpoint}_{mask}_{method}"
    path = os.path.join(run_dir, stem + ".json")
    write_json(path, report)
    figure = os.path.join(run_dir, stem + ".png")
    _figure(figure_rows, data.image_shape, figure, report)
    return Imputation(report, path, figure)


def _figure(rows, shape, path, report):
    n = rows[0].shape[0]
    shape = shape or (1, rows[0].shape[1])
    fig, axes = subplots(3, n, figsize=(1.2 * n, 4), squeeze=False)
    for r, (images, name) in enumerate(zip(rows, ("observed (grey: missing)", "imputed", "truth"))):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(np.clip(images[c].reshape(shape).numpy(), 0, 1), cmap="gray", vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=7)
    fig.suptitle(f"{report['mask']} mask, {report['method']}: log p(x_m|x_o) "
                 f"{report['missing_log_likelihood']:.2f} vs mean-fill {report['baseline_missing_log_likelihood']:.2f} "
                 "nats per image", fontsize=8)
    fig.savefig(path, dpi=100, bbox_inches="tight")
