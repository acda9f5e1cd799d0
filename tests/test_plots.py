"""Figures and imputation of trained runs (pyrovae plot, pyrovae impute)."""

import json

import matplotlib.image
import numpy as np
import pytest
import torch

from pyrovae import cli
from pyrovae.config import TrainConfig
from pyrovae.runs.train import train

SMALL = {"hidden": (32,), "epochs": 2, "eval_num_samples": 0}


def _assert_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 50 and image.shape[1] > 50
    assert image[..., :3].std() > 0.05  # not a blank canvas


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("plots") / "run"
    result = train(TrainConfig(latent_dim=2, **SMALL), str(out), progress=False)
    return out, result


def test_training_writes_every_figure(digits_run):
    out, result = digits_run
    names = sorted(p.split("/")[-1] for p in result.figures)
    assert names == ["curves.png", "interpolations.png", "latent.png", "reconstructions.png", "samples.png",
                     "traversals.png"]
    for path in result.figures:
        _assert_png(path)


def test_plot_command_rewrites_figures(digits_run, capsys):
    out, _ = digits_run
    (out / "samples.png").unlink()
    assert cli.main(["plot", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert str(out / "samples.png") in printed and len(printed) == 6
    _assert_png(out / "samples.png")


def test_non_image_data_gets_curves_and_latent_only(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, (np.random.default_rng(0).random((50, 10)) > 0.5).astype(np.float32))
    result = train(TrainConfig(data=str(path), latent_dim=3, batch_size=10, **SMALL), str(tmp_path / "run"),
                   progress=False)
    assert sorted(p.split("/")[-1] for p in result.figures) == ["curves.png", "latent.png"]


@pytest.mark.parametrize("mask, method", [("random", "per-example"), ("bottom", "encoder")])
def test_impute_command(digits_run, capsys, mask, method):
    out, _ = digits_run
    args = ["impute", str(out), "--mask", mask, "--method", method, "--num-examples", "30", "--steps", "5",
            "--num-samples", "50"]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    assert "mean-fill baseline" in text
    report = json.loads((out / f"impute_test_best_{mask}_{method}.json").read_text())
    assert report["num_examples"] == 30 and report["mask"] == mask
    expected_fraction = 0.5 if mask == "bottom" else None
    if expected_fraction:
        assert report["missing_fraction"] == expected_fraction
    for key in ("missing_log_likelihood", "baseline_missing_log_likelihood", "missing_error", "missing_mse"):
        assert np.isfinite(report[key])
    assert report["missing_log_likelihood"] < 0 and 0 <= report["missing_error"] <= 1
    if mask == "bottom":  # the mean-fill baseline by hand: rows 4-7 of the 8x8 images are missing
        from pyrovae.data import load_dataset

        data = load_dataset("digits")
        pick = torch.randperm(len(data.test), generator=torch.Generator().manual_seed(0))[:30]
        x = data.test.x[pick].numpy().reshape(30, 8, 8)[:, 4:]
        p = np.broadcast_to(data.train.x.numpy().mean(0).reshape(8, 8)[4:], x.shape)
        assert report["baseline_missing_mse"] == pytest.approx(float(((p - x) ** 2).mean()), rel=1e-5)
        assert report["baseline_missing_error"] == pytest.approx(float(((p > 0.5) != x).mean()), rel=1e-5)
    _assert_png(out / f"impute_test_best_{mask}_{method}.png")


def test_impute_bad_options(digits_run, tmp_path, capsys):
    out, _ = digits_run
    assert cli.main(["impute", str(out), "--missing-fraction", "1.5"]) == 2
    assert "--missing-fraction: the value must be a number in (0, 1), got 1.5" in capsys.readouterr().err
    path = tmp_path / "x.npy"
    np.save(path, (np.random.default_rng(0).random((50, 10)) > 0.5).astype(np.float32))
    train(TrainConfig(data=str(path), latent_dim=3, batch_size=10, **SMALL), str(tmp_path / "run"), progress=False)
    assert cli.main(["impute", str(tmp_path / "run"), "--mask", "top"]) == 2
    assert "needs images" in capsys.readouterr().err
