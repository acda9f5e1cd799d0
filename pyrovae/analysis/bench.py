"""``pyrovae bench``: pyrovae's training steps and IWAE evaluation against hand-written PyTorch,
measured in one process.

Four groups, each with its reference (ratio 1) from :mod:`pyrovae.analysis.reference`:

* **VAE training step**: the IWAE paper's 784-200-200-50 tanh VAE, Bernoulli decoder, batch
  100, Adam. pyrovae's steps (Pyro ELBO + ``torch.optim``) with each guide, by default (``trace``
  and ``meanfield`` compiled where exact: Pyro's JIT ELBO, :mod:`pyrovae.inference.jit`) and
  with ``--jit off``, and the plain ``SVI`` + ``pyro.optim`` loop as Pyro's own examples write it.
* **digits epoch**: whole epochs of ``pyrovae train`` on the bundled digits against a
  hand-written loop that validates and saves its state every epoch
  (:mod:`pyrovae.analysis.bench_epoch`).
* **M2 training step**: the unlabelled objective, the class summed over 10 values: ``enum``
  (``TraceEnum_ELBO``) against a hand-written batched sum over classes.
* **IWAE evaluation**: per-datapoint log p(x) with K importance samples, chunked to at most
  ``max_rows`` (samples x examples) rows, and the peak memory the evaluation added; the
  reference and pyrovae run in turn, ``iwae_repeats`` rounds, and the ratio is the median of
  the per-round ratios.

Training rows run round-robin: each repeat times a block of ``steps`` steps of every row, after
``warmup`` steps each, so drift on a shared machine hits all rows alike. A row's ratio is the
median over repeats of its block time over the reference's block time in the same repeat.
The data are random binary images (the timings do not depend on pixel values).
"""

import time

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO

from pyrovae.analysis.bench_epoch import time_digits_epochs
from pyrovae.analysis.memory import peak_memory
from pyrovae.analysis.reference import ReferenceM2, ReferenceVAE, reference_iwae
from pyrovae.analysis.startup import time_startup
from pyrovae.analysis.timing import median_ratios, synchronize
from pyrovae.build import build_elbo, build_model_and_guide
from pyrovae.config import TrainConfig
from pyrovae.data import Split, batches
from pyrovae.inference.marginal import iwae
from pyrovae.jsonio import write_json
from pyrovae.local import private_param_store
from pyrovae.runs.train import resolve_device
from pyrovae.training.objective import unsupervised_loss
from pyrovae.training.optim import make_optimizers

__all__ = ["run_bench", "VAE_ROWS", "print_table"]

P, BATCH, NUM_DATA = 784, 100, 10000
DIGITS_GROUP = "digits epoch (64-200-200-50, batch 100, validation + checkpoint)"

# label -> pyrovae's training options (TrainConfig keywords); None: Pyro's SVI + pyro.optim loop
VAE_ROWS = {
    "pyrovae: amortized, trace": dict(guide="amortized", elbo="trace"),
    "pyrovae: amortized, trace, --jit off": dict(guide="amortized", elbo="trace", jit="off"),
    "pyrovae: amortized, meanfield": dict(guide="amortized", elbo="meanfield"),
    "pyrovae: amortized, meanfield, --jit off": dict(guide="amortized", elbo="meanfield", jit="off"),
    "pyrovae: per-example, trace": dict(guide="per-example", elbo="trace"),
    "pyrovae: per-example, trace, --jit off": dict(guide="per-example", elbo="trace", jit="off"),
    "pyrovae: per-example, trace, --local-steps 1": dict(guide="per-example", elbo="trace", local_steps=1),
    "pyrovae: semi-amortized (5 refinement steps), trace": dict(guide="semi-amortized", elbo="trace"),
    "Pyro SVI + pyro.optim.Adam, Trace_ELBO (Pyro's examples)": None,
}


def _feed(x, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    while True:
        for xb, idx in batches(Split(x), BATCH, gen, drop_last=True):
            yield xb.to(device), idx.to(device)


def _reference_step(module, x, device):
    module.to(device)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    feed = _feed(x, device)

    def step():
        xb, _ = next(feed)
        optimizer.zero_grad(set_to_none=True)
        module(xb, NUM_DATA).backward()
        optimizer.step()

    return step


def _pyrovae_step(config, x, device):
    torch.manual_seed(0)
    model, guide = build_model_and_guide(config, P, NUM_DATA)
    model.initialize_from_data(x)
    model.to(device), guide.to(device)
    elbo = build_elbo(config, model)  # the unlabelled loss for m2, as its bench row says
    loss = unsupervised_loss(config, model, guide, elbo)
    optimizer = make_optimizers([model, guide], config.lr, config.local_lr)
    feed = _feed(x, device)

    def step():
        xb, idx = next(feed)
        with pyro.validation_enabled(False):  # as in the training loop: checks ran before the first step
            optimizer.local_updates(lambda: loss(xb, idx, NUM_DATA), config.local_steps)
            loss(xb, idx, NUM_DATA)
        optimizer.step(local=not config.local_steps)

    return step


def _svi_step(x, device):
    """The loop of Pyro's VAE example: ``SVI(model, guide, pyro.optim.Adam, Trace_ELBO()).step``,
    with Pyro's global parameter store (``pyro.optim`` finds parameters there; pyrovae itself
    keeps them module-local and steps ``torch.optim``)."""
    with pyro.settings.context(module_local_params=False):
        pyro.clear_param_store()
        torch.manual_seed(0)
        model, guide = build_model_and_guide(TrainConfig(), P, NUM_DATA)
        model.initialize_from_data(x)
        model.to(device), guide.to(device)
        svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO(max_plate_nesting=1))
    feed = _feed(x, device)

    def step():
        xb, idx = next(feed)
        with pyro.settings.context(module_local_params=False):
            svi.step(xb, idx, NUM_DATA)

    return step


def _time_round_robin(steps_by_label, steps, warmup, repeats, device):
    """Median seconds per step of each row and its median per-repeat ratio to the first row."""
    for step in steps_by_label.values():
        for _ in range(warmup):
            step()
    blocks = {label: [] for label in steps_by_label}
    for _ in range(repeats):
        for label, step in steps_by_label.items():
            synchronize(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            synchronize(device)
            blocks[label].append((time.perf_counter() - t0) / steps)
    return median_ratios(blocks)


def _time_iwae(x, num_samples, max_rows, device, repeats=3):
    """Seconds of each IWAE evaluation of ``x``, round-robin over ``repeats`` rounds: the median
    time, the median per-round ratio to the reference, and the largest peak memory added."""
    torch.manual_seed(0)
    config = TrainConfig()
    model, guide = build_model_and_guide(config, P, NUM_DATA)
    model.to(device), guide.to(device)
    reference = ReferenceVAE().to(device)
    x = x.to(device)
    runs = {"reference: chunked PyTorch IWAE loop": lambda x, k: reference_iwae(reference, x, k, BATCH, max_rows),
            "pyrovae: iwae() (log p(x), ELBO, ESS, E_q[z|x] per datapoint)":
                lambda x, k: iwae(model, guide, x, k, BATCH, max_rows)}
    for run in runs.values():  # warm-up: first-call imports and allocations stay out of the timing
        run(x[:2], min(num_samples, 50))
    seconds, peaks = {label: [] for label in runs}, {label: [] for label in runs}
    for _ in range(repeats):
        for label, run in runs.items():
            with peak_memory(device) as mem:
                synchronize(device)
                t0 = time.perf_counter()
                run(x, num_samples)
                synchronize(device)
                seconds[label].append(time.perf_counter() - t0)
            peaks[label].append(mem.peak)
    rows = median_ratios(seconds)
    for r in rows:
        r["seconds_per_example"] = r["seconds_median"] / len(x)
        r["peak_memory_bytes"] = None if None in peaks[r["row"]] else max(peaks[r["row"]])
    return rows


@private_param_store
def run_bench(steps=50, warmup=20, repeats=10, iwae_examples=None, num_samples=5000, max_rows=20000,
              device="cpu", rows=None, out=None, progress=print, startup_repeats=5, digits_epochs=8,
              digits_repeats=5, iwae_repeats=3):
    """Run the groups; returns ``{group: [row dicts]}`` and optionally writes JSON to ``out``.

    :param int startup_repeats: rounds of the command-line start-up group
        (:mod:`pyrovae.analysis.startup`); 0 skips it.
    :param int digits_epochs, digits_repeats: epochs per run and rounds of the digits-epoch group
        (:func:`~pyrovae.analysis.bench_epoch.time_digits_epochs`); 0 rounds skip it.

    :param int iwae_examples: examples in the IWAE evaluation (default 100 on CPU, 10,000 on
        CUDA); the table also gives the time scaled to 10,000.
    :param int iwae_repeats: rounds of the IWAE group (the reference and pyrovae in turn).
    :param rows: labels of :data:`VAE_ROWS` to time (default all).
    :raises ConfigError: if ``device`` is CUDA and no GPU is available.
    """
    device = resolve_device(device)
    iwae_examples = iwae_examples or (10000 if device.type == "cuda" else 100)
    x = torch.bernoulli(torch.full((NUM_DATA, P), 0.3), generator=torch.Generator().manual_seed(0))
    results = {}
    progress("timing VAE training steps ...")
    vae_steps = {"reference: hand-written PyTorch VAE (analytic KL)": _reference_step(ReferenceVAE(), x, device)}
    for label, options in VAE_ROWS.items():
        if rows is not None and label not in rows:
            continue
        if options is None:
            vae_steps[label] = _svi_step(x, device)
        else:
            vae_steps[label] = _pyrovae_step(TrainConfig(**options), x, device)
    results["VAE training step"] = _time_round_robin(vae_steps, steps, warmup, repeats, device)
    progress("timing M2 training steps ...")
    m2_steps = {"reference: hand-written PyTorch M2 (sum over 10 classes)": _reference_step(ReferenceM2(), x, device),
                "pyrovae: m2, enum (unlabelled batch)": _pyrovae_step(TrainConfig(model="m2", elbo="enum"), x, device)}
    results["M2 training step"] = _time_round_robin(m2_steps, steps, warmup, repeats, device)
    if digits_repeats:
        progress(f"timing digits epochs ({digits_repeats} rounds of {digits_epochs} epochs per row) ...")
        results[DIGITS_GROUP] = time_digits_epochs(digits_epochs, digits_repeats, device)
    progress(f"timing IWAE evaluation, K={num_samples}, {iwae_examples} examples ...")
    results[f"IWAE evaluation, K={num_samples}"] = _time_iwae(x[:iwae_examples], num_samples, max_rows, device,
                                                              iwae_repeats)
    if startup_repeats:
        progress("timing command-line start-up ...")
        results["command-line start-up"] = time_startup(startup_repeats)
    if out:
        write_json(out, {"device": str(device), "threads": torch.get_num_threads(), "batch_size": BATCH,
                         "steps": steps, "warmup": warmup, "repeats": repeats, "iwae_examples": iwae_examples,
                         "num_samples": num_samples, "max_rows": max_rows, "digits_epochs": digits_epochs,
                         "digits_repeats": digits_repeats, "iwae_repeats": iwae_repeats,
                         "groups": results})
    return results


def print_table(results, print=print):
    """One table: median ms per step (s per 10,000 examples for IWAE), ratio, peak memory."""
    print(f"{'row':66}{'median':>12}{'ratio':>8}{'peak MB':>9}")
    for group, rows in results.items():
        print(f"-- {group}")
        for r in rows:
            if "seconds_per_example" in r:
                time_text = f"{r['seconds_per_example'] * 10000:9.0f} s/10k"
            elif group == "command-line start-up":
                time_text = f"{r['seconds_median']:9.2f} s"
            elif group == DIGITS_GROUP:
                time_text = f"{1000 * r['seconds_median']:6.1f} ms/ep"
            else:
                time_text = f"{1000 * r['seconds_median']:9.2f} ms"
            mem = r.get("peak_memory_bytes")
            print(f"{r['row'][:65]:66}{time_text:>12}{r['ratio']:>8.2f}{'' if mem is None else f'{mem / 2**20:9.0f}'}")
