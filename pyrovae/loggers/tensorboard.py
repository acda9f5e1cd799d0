"""TensorBoard: event files in the run directory, read by ``tensorboard --logdir runs/``."""

from pyrovae.errors import ConfigError
from pyrovae.loggers import Logger

__all__ = ["TensorBoardLogger"]


class TensorBoardLogger(Logger):
    """Writes ``events.out.tfevents.*`` into ``run_dir`` with :class:`torch.utils.tensorboard.SummaryWriter`:
    scalars per epoch, images every ``images_every`` epochs, and at the end the options and results
    in TensorBoard's HParams view. A resumed run drops the events after its checkpoint's epoch
    (``purge_step``), so the curves stay one point per epoch. Needs the ``tensorboard`` package."""

    writer = None

    def check(self):
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError as err:
            raise ConfigError(f"--logger tensorboard needs the tensorboard package ({err}); install it with: "
                              "pip install tensorboard (or pip install 'pyrovae[loggers]')") from None

    def open(self, epoch):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=self.run_dir, purge_step=epoch + 1 if epoch else None)

    def log_scalars(self, values, step):
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def log_images(self, images, step):
        for name, array in images.items():
            self.writer.add_image(name, array, step, dataformats="HW")
        self.writer.flush()

    def log_final(self, hparams, results):
        if self.writer is None:
            self.open(0)
        self.writer.add_hparams(hparams, {f"final/{k}": v for k, v in results.items()}, run_name=".",
                                global_step=int(results.get("epochs", 0)))
        self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None
