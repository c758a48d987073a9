"""Audit a model that was not trained by a fleet: a checkpoint plus its keep row.

The checkpoint's model and data come from a mia-bench config: the one logged with the
run that wrote the checkpoint (found from ``mlruns/checkpoints/<run_id>/``), or one
given with ``--config``. Its ``model.class_path`` names the model's class, mia-bench's
Classifier or a LightningModule of the user's (importable where the audit runs), which
is built from the config and given the checkpoint's weights, loaded with
``torch.load(weights_only=True)``; signals go through :func:`~mia_bench.hooks.signal_net`
as while training.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from mlflow.tracking import MlflowClient

from mia_bench.callbacks.signal_recorder import compute_signals
from mia_bench.errors import UserError
from mia_bench.hooks import signal_net
from mia_bench.store.artifacts import EpochSignals, read_npy

CHECKPOINT_INPUTS = {
    "config.yaml": "--config (a mia-bench fit config naming the model's class and its data)",
    "keep.npy": "--keep (a .npy bool[N] keep row)",
}


def config_of_run(client: MlflowClient, checkpoint: Path) -> tuple[Path | None, Path | None] | None:
    """``(config.yaml, keep.npy)`` of the MLflow run whose checkpoint folder holds
    ``checkpoint``, downloaded; None when the folder is no run's.

    A path is None when the run lacks that artifact (a run of a plain
    ``lightning.Trainer`` logs no ``config.yaml``).
    """
    run_id = checkpoint.resolve().parent.name
    try:
        client.get_run(run_id)
    except Exception:  # noqa: BLE001 - any lookup failure means "not a mia-bench run"
        return None
    folder = Path(tempfile.mkdtemp(prefix="mia-audit-"))
    logged = {p.path for p in client.list_artifacts(run_id)}
    config, keep = (
        Path(client.download_artifacts(run_id, name, str(folder))) if name in logged else None
        for name in CHECKPOINT_INPUTS
    )
    return config, keep


def config_and_keep(
    client: MlflowClient, checkpoint: Path, config: Path | None, keep: Path | None
) -> tuple[Path, Path]:
    """``--config`` and ``--keep``, each by default the artifact of the checkpoint's run.

    Raises:
        UserError: one is neither given nor logged with the run, named with its flag.
    """
    found = config_of_run(client, checkpoint) if config is None or keep is None else None
    logged_config, logged_keep = found or (None, None)
    config, keep = config or logged_config, keep or logged_keep
    paths = dict(zip(CHECKPOINT_INPUTS, (config, keep), strict=True))
    missing = [name for name, path in paths.items() if path is None]
    if not missing:
        return config, keep
    where = (
        f"{checkpoint} is not in a mia-bench run's checkpoint folder"
        if found is None
        else f"the MLflow run of {checkpoint} logged no {' nor '.join(missing)}"
    )
    flags = " and ".join(CHECKPOINT_INPUTS[name] for name in missing)
    raise UserError(f"{where}: pass {flags}")


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
        signal_net(model),
        data.audit_dataloader(),
        data.query_views,
        layers,
        epoch,
        progress=None,
        memory_format=getattr(model, "memory_format", "contiguous"),
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
