"""TensorBoard and MLflow loggers, read back with the libraries' own readers; failures before training."""

import json
import os

import pytest

from pyrovae import cli
from pyrovae.loggers import LOGGERS, Logger
from pyrovae.loggers.mlflow import MLflowLogger, _file_store_allowed

SMALL = ["--hidden", "16", "--latent-dim", "4", "--eval-num-samples", "30", "--batch-size", "50"]


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _tensorboard(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def _mlflow(run):
    from mlflow import MlflowClient

    saved = json.loads((run / "mlflow_run.json").read_text())
    with _file_store_allowed(saved["tracking_uri"]):
        return MlflowClient(saved["tracking_uri"]), saved["run_id"]


def test_loggers_copy_metrics_jsonl_and_a_resume_continues_them(tmp_path, capsys):
    run = tmp_path / "runs" / "run"
    args = ["train", "--out", str(run), *SMALL, "--logger", "tensorboard,mlflow", "--track-loglik-every", "2",
            "--track-num-samples", "20", "--log-images-every", "2"]
    assert cli.main([*args, "--epochs", "3"]) == 0
    assert cli.main([*args, "--epochs", "5", "--resume"]) == 0
    capsys.readouterr()
    rows = _metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    summary = json.loads((run / "summary.json").read_text())

    events = _tensorboard(run)
    for key, name in (("valid_elbo", "elbo/valid"), ("train_elbo", "elbo/train"), ("valid_kl", "valid/kl"),
                      ("valid_reconstruction", "valid/reconstruction")):
        logged = [(e.step, e.value) for e in events.Scalars(name)]
        assert logged == [(r["epoch"], pytest.approx(r[key], rel=1e-6)) for r in rows], name  # once per epoch
    assert [(e.step, e.value) for e in events.Scalars("log_likelihood/valid")] == [
        (r["epoch"], pytest.approx(r["valid_log_likelihood"], rel=1e-6)) for r in rows if "valid_log_likelihood" in r]
    assert [e.step for e in events.Scalars("log_likelihood/valid")] == [2, 4]
    assert [e.value for e in events.Scalars("lr")] == pytest.approx([1e-3] * 5)
    assert {e.step for e in events.Images("samples")} == {e.step for e in events.Images("reconstructions")} == {2, 4}
    final = events.Scalars("final/test/log_likelihood")  # the 3-epoch run's, then the resumed run's
    assert [e.step for e in final] == [3, 5] and final[-1].value == pytest.approx(summary["test"]["log_likelihood"])

    client, run_id = _mlflow(run)
    assert os.path.dirname(client.tracking_uri.removeprefix("file:")) == str(tmp_path / "runs")  # beside the run
    logged = client.get_run(run_id)
    assert logged.info.status == "FINISHED" and logged.info.run_name == "run"
    assert logged.data.params["latent_dim"] == "4" and logged.data.params["hidden"] == "16"
    history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "elbo/valid"))
    assert history == [(r["epoch"], pytest.approx(r["valid_elbo"])) for r in rows]  # one run, continued on resume
    assert logged.data.metrics["final/test/log_likelihood"] == pytest.approx(summary["test"]["log_likelihood"])
    assert logged.data.metrics["final/test/active_units"] == summary["test"]["active_units"]
    images = sorted(a.path for a in client.list_artifacts(run_id, "images"))
    assert images == [f"images/{n}_epoch{e}.png" for n in ("reconstructions", "samples") for e in (2, 4)]
    assert len(client.search_runs([logged.info.experiment_id])) == 1


def test_a_logger_that_cannot_start_fails_before_training(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    run = tmp_path / "run"
    assert cli.main(["train", "--out", str(run), *SMALL, "--epochs", "1", "--logger", "mlflow",
                     "--tracking-uri", f"file:{blocker}/mlruns"]) == 2
    assert "pyrovae: error: --logger mlflow: cannot create the tracking store" in capsys.readouterr().err
    assert not run.exists()
    assert cli.main(["train", "--out", str(run), "--logger", "wandb"]) == 2
    assert "unknown logger 'wandb'; valid names: mlflow, tensorboard" in capsys.readouterr().err
    monkeypatch.setitem(__import__("sys").modules, "mlflow", None)  # as if MLflow were not installed
    assert cli.main(["train", "--out", str(run), *SMALL, "--epochs", "1", "--logger", "mlflow"]) == 2
    assert "pip install mlflow-skinny" in capsys.readouterr().err and not run.exists()


def test_a_users_logger_by_registry_name(tmp_path):
    seen = []

    class Recorder(Logger):
        def log_scalars(self, values, step):
            seen.append((step, values["elbo/valid"]))

        def log_final(self, hparams, results):
            seen.append(("final", hparams["latent_dim"], results["epochs"]))

    LOGGERS.register("test-recorder", Recorder)
    try:
        assert cli.main(["train", "--out", str(tmp_path / "run"), *SMALL, "--epochs", "2", "--eval-num-samples", "0",
                         "--logger", "test-recorder"]) == 0
    finally:
        LOGGERS.unregister("test-recorder")
    rows = _metrics(tmp_path / "run")
    assert seen == [(1, rows[0]["valid_elbo"]), (2, rows[1]["valid_elbo"]), ("final", 4, 2.0)]
    assert isinstance(MLflowLogger(str(tmp_path / "run")).tracking_uri, str)
