"""Epoch metrics to every logger (step = epoch): the one boundary where numbers go out."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import MLFlowLogger


def log_epoch_metrics(
    trainer: L.Trainer, metrics: Mapping[str, float], epoch: int | None = None
) -> None:
    """Log metrics to every logger with ``step = epoch`` (default: the current epoch).

    The values also go into ``trainer.callback_metrics`` so that ``EarlyStopping`` and
    ``ModelCheckpoint`` can monitor them (e.g. ``test/loss`` or ``mia/auc/loss``).
    """
    if trainer.sanity_checking or not metrics:
        return
    values = {k: float(v) for k, v in metrics.items()}
    for logger in trainer.loggers:
        logger.log_metrics(values, step=trainer.current_epoch if epoch is None else epoch)
    trainer.callback_metrics.update({k: torch.tensor(v) for k, v in values.items()})


class BufferedMLFlowLogger(MLFlowLogger):
    """Lightning's ``MLFlowLogger`` that sends an epoch's metrics only once it is complete.

    Metrics are held back until :class:`~mia_bench.store.checkpoints.EpochCheckpoint`
    has written the epoch's checkpoint and calls :meth:`commit`; the held-back values
    also travel inside that checkpoint. So a run killed at any point and resumed from
    its last complete epoch logs exactly one value per metric and step: values of an
    unfinished epoch were never sent, and values of the last complete epoch that a kill
    kept from being sent are sent on resume (:meth:`send_missing`). At the end of a
    successful fit the rest is sent; a failed fit drops its unfinished epoch.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: list[tuple[str, float, int]] = []

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for key, value in metrics.items():
            if not isinstance(value, str):
                self._pending.append((key, float(value), int(step or 0)))

    def pending_metrics(self) -> list[tuple[str, float, int]]:
        """The held-back ``(key, value, step)`` triples."""
        return list(self._pending)

    def commit(self, epoch: int | None = None) -> None:
        """Send the held-back metrics of steps <= ``epoch`` (None: all of them)."""
        if epoch is None:
            due, self._pending = self._pending, []
        else:
            due = [m for m in self._pending if m[2] <= epoch]
            self._pending = [m for m in self._pending if m[2] > epoch]
        self._send(due)

    def send_missing(self, metrics: list[tuple[str, float, int]]) -> None:
        """Send the ``(key, value, step)`` triples MLflow does not have yet (on resume)."""
        have: dict[str, set[int]] = {}
        for key in {k for k, _, _ in metrics}:
            have[key] = {m.step for m in self.experiment.get_metric_history(self.run_id, key)}
        self._send([m for m in metrics if m[2] not in have[m[0]]])

    def _send(self, metrics: list[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        batch = [Metric(key=k, value=v, timestamp=stamp, step=s) for k, v, s in metrics]
        for start in range(0, len(batch), 1000):  # MLflow takes 1000 metrics per batch
            self.experiment.log_batch(run_id=self.run_id, metrics=batch[start : start + 1000])

    def finalize(self, status: str = "success") -> None:
        if status in ("success", "finished"):
            self.commit()
        super().finalize(status)
