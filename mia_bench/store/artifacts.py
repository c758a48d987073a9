"""The on-disk contract of a run's artifacts.

Layout under a run's artifact folder::

    keep.npy                          bool[N]      the run's keep row (True = member)
    signals/epoch_XXX.npz             logits float32[N, A, C], labels int64[N]
    embeddings/epoch_XXX/<layer>.npy  float32[N, D]

Every write goes to a temporary file in the same folder and is renamed into place,
so a killed run never leaves a file that reads as whole.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import unquote, urlparse

import numpy as np

if TYPE_CHECKING:
    import lightning as L

_EPOCH_FILE = re.compile(r"^epoch_(\d{3,})\.npz$")


@dataclass(frozen=True)
class EpochSignals:
    """What a run outputs on the whole pool at one epoch.

    Attributes:
        epoch: the epoch (0-based) after which the signals were computed.
        logits: ``float32[N, A, C]``, A query views (view 0 = plain).
        labels: ``int64[N]``.
        embeddings: layer name -> ``float32[N, D]`` (view 0).
    """

    epoch: int
    logits: np.ndarray
    labels: np.ndarray
    embeddings: Mapping[str, np.ndarray] = field(default_factory=dict)


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write a file through ``write(fileobj)`` to a temporary name, then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def remove_temporary_files(folder: Path) -> list[Path]:
    """Remove the temporary files :func:`atomic_write` leaves when its process is killed.

    Call it only while holding the run's lease (no other process writes the folder).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.rglob(".*.tmp") if p.is_file()]
    for path in found:
        path.unlink(missing_ok=True)
    return found


def _save_npy(path: Path, array: np.ndarray) -> Path:
    return atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))


def signals_path(run_dir: Path, epoch: int) -> Path:
    """Where a run's signals of one epoch live."""
    return Path(run_dir) / "signals" / f"epoch_{epoch:03d}.npz"


def embedding_path(run_dir: Path, epoch: int, layer: str) -> Path:
    """Where a run's embeddings of one layer and epoch live."""
    return Path(run_dir) / "embeddings" / f"epoch_{epoch:03d}" / f"{layer}.npy"


def save_keep(run_dir: Path, keep: np.ndarray) -> Path:
    """Save the run's keep row, ``bool[N]``."""
    return _save_npy(Path(run_dir) / "keep.npy", np.asarray(keep, dtype=bool))


def load_keep(run_dir: Path) -> np.ndarray:
    """Load the run's keep row, ``bool[N]``."""
    return np.load(Path(run_dir) / "keep.npy", allow_pickle=False)


def save_signals(run_dir: Path, signals: EpochSignals) -> list[Path]:
    """Save one epoch's logits, labels and embeddings; returns the written files.

    Embeddings are written first and the logits file last, so a present
    ``signals/epoch_XXX.npz`` means the epoch is complete.
    """
    written = [
        _save_npy(embedding_path(run_dir, signals.epoch, layer), np.asarray(values))
        for layer, values in signals.embeddings.items()
    ]
    arrays = {"logits": signals.logits, "labels": signals.labels}
    written.append(
        atomic_write(signals_path(run_dir, signals.epoch), lambda f: np.savez(f, **arrays))
    )
    return written


def load_signals(run_dir: Path, epoch: int, layers: Sequence[str] = ()) -> EpochSignals:
    """Load one epoch's signals (and the named layers' embeddings)."""
    path = signals_path(run_dir, epoch)
    if not path.exists():
        have = list_epochs(run_dir)
        raise FileNotFoundError(f"no signals for epoch {epoch} at {path}; epochs recorded: {have}")
    with np.load(path, allow_pickle=False) as z:
        logits, labels = z["logits"], z["labels"]
    embeddings = {
        layer: np.load(embedding_path(run_dir, epoch, layer), allow_pickle=False)
        for layer in layers
    }
    return EpochSignals(epoch, logits, labels, embeddings)


def list_epochs(run_dir: Path) -> list[int]:
    """Epochs with complete signals, ascending."""
    folder = Path(run_dir) / "signals"
    if not folder.is_dir():
        return []
    found = (_EPOCH_FILE.match(p.name) for p in folder.iterdir())
    return sorted(int(m.group(1)) for m in found if m)


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
    from lightning.pytorch.loggers import MLFlowLogger

    for logger in trainer.loggers:
        if isinstance(logger, MLFlowLogger) and logger.run_id:
            info = logger.experiment.get_run(logger.run_id).info
            return local_artifact_dir(info.artifact_uri)
    return Path(trainer.default_root_dir) / "mia_artifacts"
