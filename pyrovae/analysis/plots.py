"""Figures of a run: what the model learned, as PNG files in the run directory.

``plot_run`` writes

==========================  ====================================================================
file                        content
==========================  ====================================================================
``samples.png``             decoder means E[x | z] at z ~ p(z)
``reconstructions.png``     test images (odd rows) above E[x | z = E_q[z | x]] (even rows)
``latent.png``              E_q[z | x] of test images, 2-D directly or projected by PCA,
                            coloured by label where labels exist
``interpolations.png``      decoder means along straight lines between encoded test images
``traversals.png``          one latent dimension varied over [-3, 3] at a time (the most
                            active dimensions first), the others at the test images' mean
``curves.png``              training and validation ELBO per epoch
==========================  ====================================================================

Image figures need an image shape (square images, or the dataset's own); without one only
``latent.png`` and ``curves.png`` are written.
"""

import os

import numpy as np
import torch

from pyrovae.figure import subplots
from pyrovae.inference.marginal import log_weights
from pyrovae.jsonio import read_jsonl
from pyrovae.models import guide_discrete_sites
from pyrovae.runs.rundir import CONFIG, METRICS

__all__ = ["plot_run", "decode_mean", "posterior_means", "plot_khat", "plot_collapse", "image_grids"]


@torch.no_grad()
def decode_mean(model, z):
    """E[x | z] for z (..., D): the model's ``decode_mean`` (the likelihood's mean at the decoder
    output, whatever the network), shape (..., P)."""
    return model.decode_mean(z)


def posterior_means(model, guide, x):
    """E_q[z | x] of the first latent site, shape (N, D). A per-example guide has no
    parameters for new data, so per-example Gaussians are fitted to ``x`` first (100 steps)."""
    site = model.latent_sites[0]
    if getattr(guide, "local_tables", ()):
        from pyrovae.inference.local_fit import fit_local

        zeros = torch.zeros(len(x), model.latent_dim, device=x.device)
        with torch.enable_grad():  # callers may run under no_grad
            guide, _ = fit_local(model, x, zeros, torch.ones_like(zeros), steps=100, lr=3e-2)
    with torch.no_grad():
        means = log_weights(model, guide, x, 1)[3][site]
    if means is None:  # no analytic mean: average a few samples
        from pyrovae.inference.marginal import iwae

        means = iwae(model, guide, x, num_samples=64).posterior_mean[site]
    return means.float()


def _grid(images, cols, shape):
    """Tile (N, P) images into one array of ``cols`` columns."""
    images = np.clip(np.asarray(images, dtype=np.float32), 0, 1).reshape(-1, *shape)
    rows = int(np.ceil(len(images) / cols))
    h, w = shape
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), 0.5, dtype=np.float32)  # grey separators
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        out[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = img
    return out


@torch.no_grad()
def image_grids(model, guide, x, shape, seed=0, num_samples=64):
    """The images a logger shows during training, each one 2-D array in [0, 1] (grey separators):

    * ``samples``: ``num_samples`` decoder means E[x | z], z ~ p(z), 8 to a row (models without a
      single Gaussian code: their ``sample_means``, 10 to a row, where they have one);
    * ``reconstructions``: the images ``x`` (B, P) (top row) above E[x | z = E_q[z | x]] (bottom).

    The same draws every call (``seed``); the global RNG is untouched. Empty without an image shape.
    """
    if shape is None:
        return {}
    with torch.random.fork_rng(devices=[] if x.device.type == "cpu" else [x.device]):
        torch.manual_seed(seed)
        if guide_discrete_sites(model) or not (hasattr(model, "decode_mean") and hasattr(model, "prior")):
            if not hasattr(model, "sample_means"):
                return {}
            return {"samples": _grid(model.sample_means(100).cpu(), 10, shape)}
        z = model.prior().sample((num_samples,))
        samples = _grid(decode_mean(model, z).cpu(), 8, shape)
        means = posterior_means(model, guide, x)
        pairs = torch.cat([x.cpu(), decode_mean(model, means).cpu()])
    return {"samples": samples, "reconstructions": _grid(pairs, len(x), shape)}


def _save_image(path, array, title):
    fig, ax = subplots(figsize=(max(3, array.shape[1] / 18), max(3, array.shape[0] / 18) + 0.4))
    ax.imshow(array, cmap="gray_r" if array.mean() < 0.5 else "gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _curves(run_dir, path):
    rows = read_jsonl(os.path.join(run_dir, METRICS))  # a torn last line is dropped with a warning
    if not rows:
        return None
    fig, ax = subplots(figsize=(5, 3.5))
    epochs = [r["epoch"] for r in rows]
    ax.plot(epochs, [r["train_elbo"] for r in rows], label="training ELBO")
    ax.plot(epochs, [r["valid_elbo"] for r in rows], label="validation ELBO")
    tracked = [r for r in rows if r.get("valid_log_likelihood") is not None]
    if tracked:
        k = _saved_option(run_dir, "track_num_samples")
        ax.plot([r["epoch"] for r in tracked], [r["valid_log_likelihood"] for r in tracked], marker="o",
                markersize=3, label="validation log-likelihood (IWAE" + (f", K = {k})" if k else ")"))
    ax.set_xlabel("epoch")
    ax.set_ylabel("ELBO, log p(x) (nats per datapoint)")
    lo = min(min(r["train_elbo"], r["valid_elbo"]) for r in rows[len(rows) // 10 :])
    hi = max([max(r["train_elbo"], r["valid_elbo"]) for r in rows] + [r["valid_log_likelihood"] for r in tracked])
    ax.set_ylim(lo - 0.1 * (hi - lo + 1), hi + 0.05 * (hi - lo + 1))
    ax.legend()
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _saved_option(run_dir, key):
    """An option from the run's ``config.json``, or None where it cannot be read."""
    import json

    try:
        with open(os.path.join(run_dir, CONFIG)) as f:
            return json.load(f).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def _latent(means, labels, path):
    means = means.numpy()
    if means.shape[1] > 2:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2)
        points = pca.fit_transform(means)
        explained = pca.explained_variance_ratio_.sum()
        xlabel, ylabel = "PC 1", "PC 2"
        title = f"E_q[z|x], PCA of {means.shape[1]} dimensions ({explained:.0%} of variance)"
    else:
        points = np.pad(means, ((0, 0), (0, 2 - means.shape[1])))
        xlabel, ylabel, title = "z_1", "z_2", "E_q[z|x]"
    fig, ax = subplots(figsize=(5, 4.5))
    if labels is not None:
        sc = ax.scatter(points[:, 0], points[:, 1], c=labels.numpy(), cmap="tab10", s=6, alpha=0.8)
        fig.colorbar(sc, ax=ax, label="label")
    else:
        ax.scatter(points[:, 0], points[:, 1], s=4, alpha=0.5)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.title.set_fontsize(9)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


@torch.no_grad()
def _discrete_model_figures(run_dir, model, shape, seed):
    """Curves, and 100 samples E[x | latents] from the model's ``sample_means`` (for M2, one
    column per class)."""
    written = [p for p in (_curves(run_dir, os.path.join(run_dir, "curves.png")),) if p]
    if shape is not None and hasattr(model, "sample_means"):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            images = model.sample_means(100).cpu()
        written.append(_save_image(os.path.join(run_dir, "samples.png"), _grid(images, 10, shape),
                                   getattr(model, "samples_title", "samples: E[x | latents], latents ~ p")))
    return written


def plot_run(run_dir, model, guide, data, split="test", max_points=2000, seed=0):
    """Write the figures listed in the module doc into ``run_dir``.

    :param model, guide: the run's modules (eval mode).
    :param data: the run's :class:`~pyrovae.data.Dataset`.
    :returns: the list of PNG paths written.
    """
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    part = data.split(split)
    pick = torch.randperm(len(part), generator=gen)[:max_points]
    x = part.x[pick].to(device)
    labels = None if part.y is None else part.y[pick]
    if guide_discrete_sites(model) or not (hasattr(model, "decode_mean") and hasattr(model, "prior")):
        # no single Gaussian code to embed and decode (discrete or hierarchical latents)
        return _discrete_model_figures(run_dir, model, data.image_shape, seed)
    means = posterior_means(model, guide, x).cpu()  # (N, D)
    written = [p for p in (_curves(run_dir, os.path.join(run_dir, "curves.png")),
                           _latent(means, labels, os.path.join(run_dir, "latent.png"))) if p]
    shape = data.image_shape
    if shape is None:
        return written
    D = means.shape[1]

    def decode(z):
        return decode_mean(model, z.to(device)).cpu()

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        z = model.prior().sample((64,))
    written.append(_save_image(os.path.join(run_dir, "samples.png"), _grid(decode(z), 8, shape),
                               "samples: E[x | z], z ~ p(z)"))
    n = min(10, len(x))
    pairs = torch.cat([x[:n].cpu(), decode(means[:n])])
    written.append(_save_image(os.path.join(run_dir, "reconstructions.png"), _grid(pairs, n, shape),
                               "test images (top) and reconstructions E[x | E_q[z|x]] (bottom)"))
    steps = torch.linspace(0, 1, 10)[:, None]
    lines = [means[i] * (1 - steps) + means[i + 1] * steps for i in range(0, min(10, len(x) - 1), 2)]
    written.append(_save_image(os.path.join(run_dir, "interpolations.png"), _grid(decode(torch.cat(lines)), 10, shape),
                               "interpolations between encoded test images"))
    order = means.var(0).argsort(descending=True)[: min(8, D)]
    values = torch.linspace(-3, 3, 9)
    rows = []
    for d in order:
        z = means.mean(0).repeat(len(values), 1)
        z[:, d] = values
        rows.append(z)
    written.append(_save_image(os.path.join(run_dir, "traversals.png"), _grid(decode(torch.cat(rows)), 9, shape),
                               "traversals: one dimension from -3 to 3 (rows: most active first)"))
    return written


def plot_khat(path, khat, x, image_shape, threshold=0.7, worst=8):
    """Histogram of PSIS k-hat per datapoint and the ``worst`` examples (highest k-hat)."""
    k = khat.numpy()
    finite = k[np.isfinite(k)]
    show_images = image_shape is not None
    fig, axes = subplots(1, 2 if show_images else 1, figsize=(10 if show_images else 5, 3.5), squeeze=False)
    ax = axes[0][0]
    ax.hist(np.clip(finite, -1, 2), bins=50, color="tab:blue")
    ax.axvline(threshold, color="tab:red", linestyle="--", label=f"k-hat = {threshold}")
    ax.set(xlabel="PSIS k-hat (clipped to [-1, 2])", ylabel="datapoints",
           title=f"{(k > threshold).mean():.1%} of {len(k)} datapoints above {threshold}")
    ax.legend()
    if show_images:
        order = np.argsort(-np.nan_to_num(k, nan=-np.inf, posinf=1e9))[:worst]
        ax = axes[0][1]
        ax.imshow(_grid(x[order].cpu().numpy(), len(order), image_shape), cmap="gray", vmin=0, vmax=1)
        ax.set_title("highest k-hat: " + ", ".join(f"{k[i]:.2f}" for i in order), fontsize=8)
        ax.axis("off")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def plot_collapse(path, kl_per_dimension, variances, threshold=0.01):
    """Per-dimension KL(q(z_d|x) || p(z_d)), sorted, coloured by activity (Cov_x E_q[z_d] > 0.01)."""
    kl = np.asarray(kl_per_dimension)
    active = np.asarray(variances) > threshold
    order = np.argsort(-kl)
    fig, ax = subplots(figsize=(max(5, len(kl) * 0.12), 3.5))
    colors = np.where(active[order], "tab:blue", "tab:gray")
    ax.bar(np.arange(len(kl)), kl[order], color=colors)
    ax.set(xlabel="latent dimension (sorted by KL)", ylabel="E_x KL(q(z_d|x) || p(z_d)) (nats)",
           title=f"{active.sum()} of {len(kl)} units active (blue); total KL {kl.sum():.2f} nats")
    ax.set_xticks(np.arange(len(kl)), [str(i) for i in order], fontsize=6, rotation=90)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path
