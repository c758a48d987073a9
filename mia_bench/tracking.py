"""Epoch metrics to every logger (step = epoch): the one boundary where numbers go out."""

from __future__ import annotations

from collections.abc import Mapping

import lightning as L
import torch


def log_epoch_metrics(
    trainer: L.Trainer, metrics: Mapping[str, float], epoch: int | None = None
) -> None:
    """Log metrics to every logger with ``step = epoch`` (default: the current epoch).

    The values also go into ``trainer.callback_metrics`` so that ``EarlyStopping`` and
    ``ModelCheckpoint`` can monitor them (e.g. ``test/loss`` or ``mia/loss/auc``).
    """
    if trainer.sanity_checking or not metrics:
        return
    values = {k: float(v) for k, v in metrics.items()}
    for logger in trainer.loggers:
        logger.log_metrics(values, step=trainer.current_epoch if epoch is None else epoch)
    trainer.callback_metrics.update({k: torch.tensor(v) for k, v in values.items()})
