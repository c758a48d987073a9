"""Where a run's numbers and files go: epoch metrics (step = epoch) and the artifact folder."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlparse

import lightning as L
import torch
from lightning.pytorch.loggers import MLFlowLogger


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


def local_artifact_dir(artifact_uri: str) -> Path:
    """The local folder behind an MLflow artifact URI.

    Raises:
        ValueError: for a remote artifact store; mia-bench writes signals in place.
    """
    parsed = urlparse(artifact_uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path) if parsed.scheme else artifact_uri)
    raise ValueError(
        f"the run's artifacts live at {artifact_uri}, which is not a local folder: mia-bench "
        "writes signals and embeddings into the artifact folder directly. Use a local "
        "artifact location (--mlflow.artifact_location PATH)."
    )


def run_artifact_dir(trainer: L.Trainer) -> Path:
    """The folder where this run's artifacts go.

    The MLflow run's artifact folder when an ``MLFlowLogger`` is attached, otherwise
    ``<default_root_dir>/mia_artifacts``.
    """
    for logger in trainer.loggers:
        if isinstance(logger, MLFlowLogger) and logger.run_id:
            info = logger.experiment.get_run(logger.run_id).info
            return local_artifact_dir(info.artifact_uri)
    return Path(trainer.default_root_dir) / "mia_artifacts"
