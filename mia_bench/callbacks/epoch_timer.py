"""Wall-clock time of each epoch's training and test passes, as MLflow metrics."""

from __future__ import annotations

import time

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from mia_bench.tracking import log_epoch_metrics


def synchronized_clock(device: torch.device) -> float:
    """``time.perf_counter()`` once the device has finished its queued work (CUDA runs
    asynchronously: without the wait a clock reads when work was queued, not done)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class EpochTimer(Callback):
    """Logs ``time/train_epoch_s`` (the epoch's training batches) and ``time/test_epoch_s``
    (its pass over the OUT half) every epoch; :class:`SignalRecorder` logs
    ``time/signals_s``. Together they say what share of a run recording takes.

    The clock waits for the GPU at epoch boundaries only, never per batch. Training time
    ends where the test pass starts (Lightning runs it before ``on_train_epoch_end``), or
    at ``on_train_epoch_end`` when there is none; this callback comes before the
    recorder, so recording is never counted as training.
    """

    def __init__(self) -> None:
        self._start: float | None = None
        self._test_start = 0.0
        self._times: dict[str, float] = {}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._times = {}
        self._start = synchronized_clock(pl_module.device)

    def _stop_training(self, pl_module: L.LightningModule) -> None:
        if self._start is not None and "time/train_epoch_s" not in self._times:
            self._times["time/train_epoch_s"] = synchronized_clock(pl_module.device) - self._start

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        self._stop_training(pl_module)
        self._test_start = synchronized_clock(pl_module.device)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        self._times["time/test_epoch_s"] = synchronized_clock(pl_module.device) - self._test_start

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop_training(pl_module)
        log_epoch_metrics(trainer, self._times)
        self._start = None
