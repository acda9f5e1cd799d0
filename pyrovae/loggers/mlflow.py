"""MLflow: one MLflow run per pyrovae run, in a tracking store (a local file store by default)."""

import contextlib
import os
import time

from pyrovae.errors import ConfigError, StorageError
from pyrovae.jsonio import write_json
from pyrovae.loggers import Logger

__all__ = ["MLflowLogger", "MLFLOW_RUN", "default_tracking_uri"]

MLFLOW_RUN = "mlflow_run.json"  # in the run directory: the store and run id, so --resume continues that run
EXPERIMENT = "pyrovae"


def default_tracking_uri(run_dir):
    """``$MLFLOW_TRACKING_URI``, else the file store ``mlruns/`` beside the run directory (so the
    runs of one folder share a store: ``mlflow ui --backend-store-uri runs/mlruns``)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or "file:" + os.path.join(
        os.path.dirname(os.path.abspath(run_dir)), "mlruns")


def _file_path(uri):
    if uri.startswith("file:"):
        return uri[len("file:"):].removeprefix("//")
    return None if "://" in uri else uri


@contextlib.contextmanager
def _file_store_allowed(uri):
    """MLflow 3 refuses its file store unless ``MLFLOW_ALLOW_FILE_STORE`` is set; set it for the
    store's creation only (the store object is cached), and only for a file store."""
    if _file_path(uri) is None or "MLFLOW_ALLOW_FILE_STORE" in os.environ:
        yield
        return
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        yield
    finally:
        os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)


class MLflowLogger(Logger):
    """Logs through :class:`mlflow.MlflowClient` (no global active run): per-epoch metrics at step =
    epoch, images as artifacts ``images/{name}_epoch{E}.png``, the options as parameters at the
    start, and the results as metrics at the end, in experiment ``pyrovae``, run name = the run
    directory's name, tag ``pyrovae.run_dir``. ``mlflow_run.json`` in the run directory keeps the
    run id, so ``--resume`` continues the same MLflow run. Needs ``mlflow-skinny`` (or ``mlflow``).

    :param str tracking_uri: the store (default: ``config.tracking_uri``, else :func:`default_tracking_uri`).
    """

    client = run_id = None

    def __init__(self, run_dir, config=None, images=None, images_every=10, tracking_uri=None):
        super().__init__(run_dir, config, images, images_every)
        self.tracking_uri = tracking_uri or getattr(config, "tracking_uri", None) or default_tracking_uri(run_dir)

    def check(self):
        try:
            import mlflow  # noqa: F401
        except ImportError as err:
            raise ConfigError(f"--logger mlflow needs MLflow ({err}); install it with: pip install mlflow-skinny "
                              "(or pip install 'pyrovae[loggers]')") from None
        path = _file_path(self.tracking_uri)
        if path is not None:
            try:
                os.makedirs(path, exist_ok=True)
            except OSError as err:
                raise StorageError(f"--logger mlflow: cannot create the tracking store {path}: "
                                   f"{err.strerror or err}; pass --tracking-uri") from None
            if not os.access(path, os.W_OK):
                raise StorageError(f"--logger mlflow: the tracking store {path} is not writable; pass --tracking-uri")

    def open(self, epoch):
        from mlflow import MlflowClient

        with _file_store_allowed(self.tracking_uri):
            self.client = MlflowClient(self.tracking_uri)
            saved = os.path.join(self.run_dir, MLFLOW_RUN)
            if epoch and os.path.isfile(saved):
                import json

                with open(saved) as f:
                    self.run_id = json.load(f)["run_id"]
                self.client.update_run(self.run_id, status="RUNNING")
                return
            experiment = self.client.get_experiment_by_name(EXPERIMENT)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(EXPERIMENT)
            run = self.client.create_run(experiment_id, run_name=os.path.basename(os.path.abspath(self.run_dir)),
                                         tags={"pyrovae.run_dir": os.path.abspath(self.run_dir)})
            self.run_id = run.info.run_id
        write_json(os.path.join(self.run_dir, MLFLOW_RUN), {"tracking_uri": self.tracking_uri, "run_id": self.run_id})
        if self.config is not None:
            from pyrovae.loggers import hparams

            self._params(hparams(self.config))

    def _params(self, params):
        from mlflow.entities import Param

        items = [Param(k, str(v)) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow's batch limit
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_scalars(self, values, step):
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def log_images(self, images, step):
        for name, array in images.items():
            self.client.log_image(self.run_id, array, artifact_file=f"images/{name}_epoch{step}.png")

    def log_final(self, hparams, results):
        if self.client is None:
            self.open(0)
        self.log_scalars({f"final/{k}": v for k, v in results.items()}, int(results.get("epochs", 0)))
        self.client.set_terminated(self.run_id)

    def close(self):
        self.client = None
