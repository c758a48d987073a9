"""Audit a model that was not trained by a fleet: a checkpoint plus its keep row.

The checkpoint's architecture and data come from a mia-bench config: the one logged
with the run that wrote the checkpoint (found from ``mlruns/checkpoints/<run_id>/``),
or one given with ``--config``. Weights are loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from mlflow.tracking import MlflowClient

from mia_bench.callbacks.signal_recorder import compute_signals
from mia_bench.errors import UserError
from mia_bench.store.artifacts import EpochSignals, read_npy


def config_of_run(client: MlflowClient, checkpoint: Path) -> tuple[Path, Path] | None:
    """(config.yaml, keep.npy) of the MLflow run whose checkpoint folder holds ``checkpoint``."""
    run_id = checkpoint.resolve().parent.name
    try:
        client.get_run(run_id)
    except Exception:  # noqa: BLE001 - any lookup failure means "not a mia-bench run"
        return None
    folder = Path(tempfile.mkdtemp(prefix="mia-audit-"))
    config = Path(client.download_artifacts(run_id, "config.yaml", str(folder)))
    keep = Path(client.download_artifacts(run_id, "keep.npy", str(folder)))
    return config, keep


def load_weights(model: torch.nn.Module, checkpoint: Path) -> int:
    """Load a Lightning checkpoint's ``state_dict`` safely; returns its epoch."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"could not load {checkpoint} with torch.load(weights_only=True): {err}. "
            "Only checkpoints whose contents are tensors and plain Python values are loaded."
        ) from err
    weights = state.get("state_dict", state)
    model.load_state_dict(weights)
    return int(state.get("epoch", 0))


def signals_of_checkpoint(
    checkpoint: Path, config: Path, layers: tuple[str, ...] = ("embedding",)
) -> tuple[EpochSignals, object]:
    """Signals of the checkpoint's model on its pool, and the instantiated data module."""
    from mia_bench.lightning_cli import instantiate_from_config

    model, data = instantiate_from_config(config)
    epoch = load_weights(model, checkpoint)
    data.setup("fit")
    signals = compute_signals(
        model.net,
        data.audit_dataloader(),
        data.query_views,
        layers,
        epoch,
        progress=None,
        memory_format=model.memory_format,
    )
    return signals, data


def load_keep_file(path: Path, num_examples: int) -> np.ndarray:
    """A keep row from ``.npy`` (bool[N]), checked against the pool size.

    Raises:
        CorruptArtifactError: the file is missing or unreadable.
        UserError: it holds anything but ``bool[num_examples]``.
    """
    keep = read_npy(path)
    if keep.dtype != bool or keep.shape != (num_examples,):
        raise UserError(
            f"{path} must hold the model's keep row, bool[{num_examples}] (True = trained "
            f"on that pool example), got {keep.dtype}{list(keep.shape)}"
        )
    return keep
