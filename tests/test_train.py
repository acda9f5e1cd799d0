"""Training runs: the CLI on digits, evaluation reproducibility, run directories, resume, faults."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from pyrovae import cli
from pyrovae.config import TrainConfig
from pyrovae.runs.checkpoint import load_checkpoint
from pyrovae.runs.train import TrainingDiverged, train
from pyrovae.training.step import Step

SMALL = ["--hidden", "32", "--latent-dim", "4", "--eval-num-samples", "20"]


def _small_config(**kw):
    return TrainConfig(**{"hidden": (32,), "latent_dim": 4, "eval_num_samples": 0, **kw})


def test_cli_smoke_on_digits(tmp_path):
    """The console entry point end to end, in a fresh process."""
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "pyrovae", "train", "--epochs", "3", "--out", str(out), *SMALL],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"run saved in {out}" in proc.stdout
    assert "test log-likelihood (IWAE, K=20)" in proc.stdout
    figures = ["curves.png", "interpolations.png", "latent.png", "reconstructions.png", "samples.png", "traversals.png"]
    # K = 20 leaves no Pareto tail to fit (k-hat needs K >= 21): no k-hat figure
    assert sorted(os.listdir(out)) == sorted(["best.pt", "config.json", "eval_test_best_amortized_K20.json", "last.pt", "summary.json",
                                              "metrics.jsonl", "collapse_test_best_amortized_K20.png", *figures])
    assert "figures: curves.png, latent.png, samples.png" in proc.stdout
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    report = json.loads((out / "eval_test_best_amortized_K20.json").read_text())
    for key in ("log_likelihood", "elbo", "num_samples", "split", "num_examples", "active_units"):
        assert key in report
    assert report["split"] == "test" and report["num_examples"] == 179 and report["num_samples"] == 20
    assert report["elbo"] <= report["log_likelihood"] < 0
    assert json.loads((out / "config.json").read_text())["epochs"] == 3


def test_evaluate_twice_identical(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert cli.main(["train", "--epochs", "2", "--out", out, *SMALL]) == 0
    capsys.readouterr()
    args = ["evaluate", out, "--num-samples", "50", "--split", "valid"]
    assert cli.main(args) == 0
    first = capsys.readouterr().out
    assert cli.main(args) == 0
    assert capsys.readouterr().out == first
    assert json.loads(first)["split"] == "valid"
    assert cli.main([*args, "--seed", "1"]) == 0
    assert capsys.readouterr().out != first


def test_existing_run_dir_not_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    assert cli.main(["train", "--epochs", "1", "--out", str(out), *SMALL]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyrovae: error:") and "--overwrite" in err and "Traceback" not in err
    assert os.listdir(out) == ["precious.txt"]
    # --overwrite replaces only a pyrovae run's own files: the folder holds none, so nothing goes
    assert cli.main(["train", "--epochs", "1", "--out", str(out), "--overwrite", *SMALL]) == 2
    assert "holds no config.json" in capsys.readouterr().err
    assert os.listdir(out) == ["precious.txt"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--guide", "nope"], "valid names: amortized"),
        (["--model", "nope"], "valid names: bernoulli-vae, categorical-vae, hvae, m2, mixture-vae, vae"),
        (["--prior", "nope"], "valid names: diagonal, flow, laplace, mixture, standard-normal, vamp"),
        (["--likelihood", "nope"], "valid names: bernoulli, gaussian"),
        (["--activation", "nope"], "valid names: elu, gelu, relu, softplus, tanh"),
        (["--hidden", "200,0"], "positive integers"),
        (["--epochs", "x"], "invalid int value"),
        (["--patience", "0"], "--patience must be an integer >= 1"),
        (["--elbo", "nope"], "valid names: enum, iwae, iwae-dreg, iwae-stl, meanfield, relaxed, stl, trace, tracegraph, vimco"),
        (["--model", "mixture-vae"], "use --elbo enum"),
        (["--model", "m2", "--num-labels", "5000"], "--num-labels 5000 needs"),
        (["--elbo", "enum"], "has none"),
        (["--latent-dim", "0"], "--latent-dim must be an integer >= 1"),
        (["--epochs", "0"], "--epochs must be an integer >= 1 (a positive integer), got 0"),
        (["--epochs", "-3"], "--epochs must be an integer >= 1 (a positive integer), got -3"),
        (["--num-particles", "0"], "--num-particles must be an integer >= 1 (a positive integer), got 0"),
        (["--batch-size", "0"], "--batch-size must be an integer >= 1 (a positive integer), got 0"),
        (["--lr", "-1"], "--lr must be a number > 0"),
        (["--batch-size", "5000"], "exceeds the 1438 training examples"),
        (["--data", "missing.npy"], "no such file"),
        (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "tpu"], "cuda"),
    ],
)
def test_bad_options_exit_2_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    try:
        code = cli.main(["train", "--out", str(out), *args])
    except SystemExit as stop:  # argparse's own checks
        code = stop.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_dynamic_binarization_trains(tmp_path):
    """A user array of intensities in [0, 1] is binarized per batch (and once for valid/test)."""
    import numpy as np

    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).random((60, 9)))
    result = train(_small_config(data=str(path), epochs=2, batch_size=10, eval_num_samples=5),
                   str(tmp_path / "run"), progress=False)
    assert result.epochs == 2 and math.isfinite(result.evaluation.report["log_likelihood"])


@pytest.mark.parametrize("options", [{}, {"model": "bernoulli-vae", "elbo": "tracegraph"}], ids=["trace", "tracegraph"])
def test_resume_equals_uninterrupted(tmp_path, options):
    """tracegraph: Pyro's decaying-average baselines live in its param store, checkpointed too."""
    straight = str(tmp_path / "straight")
    train(_small_config(epochs=4, **options), straight, progress=False)
    split = str(tmp_path / "split")
    train(_small_config(epochs=2, **options), split, progress=False)
    result = train(_small_config(epochs=4, **options), split, resume=True, progress=False)
    assert result.epochs == 4
    a, b = load_checkpoint(os.path.join(straight, "last.pt")), load_checkpoint(os.path.join(split, "last.pt"))
    for part in ("model", "guide"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), key
    metrics = [open(os.path.join(d, "metrics.jsonl")).read().splitlines() for d in (straight, split)]
    strip = [[{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in m] for m in metrics]
    assert strip[0] == strip[1]


def test_resume_with_different_options_refused(tmp_path, capsys):
    out = str(tmp_path / "run")
    train(_small_config(epochs=1), out, progress=False)
    assert cli.main(["train", "--out", out, "--resume", "--lr", "0.1", "--batch-size", "50", "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and (f"the options differ from {out}/config.json (batch_size: saved 100, requested "
                                     "50; lr: saved 0.001, requested 0.1)") in err
    assert cli.main(["train", "--out", out, "--resume", "--epochs", "2"]) == 0  # saved options reused
    assert load_checkpoint(os.path.join(out, "last.pt"))["epoch"] == 2


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    real = Step.loss  # each step's loss, compiled or not
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return math.nan if calls["n"] == 20 else loss  # step 20 is in epoch 2 (15 steps per epoch)

    monkeypatch.setattr(Step, "loss", poisoned)
    with pytest.raises(TrainingDiverged, match="step 20 .epoch 2.*epoch 1"):
        train(_small_config(epochs=3), out, progress=False)
    assert load_checkpoint(os.path.join(out, "last.pt"))["epoch"] == 1
    assert len(open(os.path.join(out, "metrics.jsonl")).read().splitlines()) == 1


def test_nan_loss_through_the_cli_exits_1_in_one_line(tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "run")
    real, calls = Step.loss, {"n": 0}  # each step's loss, compiled or not

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return math.nan if calls["n"] == 20 else loss

    monkeypatch.setattr(Step, "loss", poisoned)
    assert cli.main(["train", "--out", out, "--epochs", "3", *SMALL]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pyrovae: error:") and err.count("\n") == 1 and "step 20" in err and "Traceback" not in err
    assert load_checkpoint(os.path.join(out, "last.pt"))["epoch"] == 1


@pytest.mark.parametrize(
    "array, message",
    [
        ([[0.0, float("nan")]] * 20, "non-finite value nan at row 0, column 1"),
        ([[0.0, 0.5]] * 7 + [[float("inf"), 0.5]] + [[0.0, 0.5]] * 12, "non-finite value inf at row 7, column 0"),
        ([[0.0, 1.0]], "1 examples; need at least 10"),
        ([[0.0, 3.0]] * 20, "values must lie in [0, 1] for the Bernoulli likelihood, found min 0, max 3; rescale "
                            "the data, or use --likelihood gaussian"),
        ([0.0] * 20, "shape (N, P)"),
    ],
)
def test_bad_data_through_the_cli(tmp_path, capsys, array, message):
    import numpy as np

    path = tmp_path / "x.npy"
    np.save(path, np.array(array))
    out = tmp_path / "run"
    assert cli.main(["train", "--data", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_evaluate_bad_run_directories(tmp_path, capsys):
    assert cli.main(["evaluate", str(tmp_path / "nowhere")]) == 2
    assert "not a pyrovae run directory" in capsys.readouterr().err
    out = tmp_path / "run"
    assert cli.main(["train", "--epochs", "1", "--out", str(out), *SMALL]) == 0
    capsys.readouterr()
    assert cli.main(["evaluate", str(out), "--num-samples", "0"]) == 2
    assert "--num-samples: the value must be an integer >= 1" in capsys.readouterr().err
    data = (out / "best.pt").read_bytes()
    (out / "best.pt").write_bytes(data[:1000])
    assert cli.main(["evaluate", str(out)]) == 2
    err = capsys.readouterr().err
    assert "could not load checkpoint" in err and err.count("\n") == 1
    assert (out / "last.pt").exists()  # nothing else touched
