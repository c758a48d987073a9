"""The on-disk contract of a run's artifacts.

Layout under a run's artifact folder::

    keep.npy                          bool[N]      the run's keep row (True = member)
    signals/epoch_XXX.npz             logits float32 (or float16) [N, A, C], labels int64[N]
    stats/epoch_XXX.npz               float32[N, A] sufficient statistics (mia_bench.statistics)
    embeddings/epoch_XXX/<layer>.npy  float32[N, D]

In ``.npz`` files the labels are compressed, the floating-point arrays stored as they are
(:func:`write_npz`). The statistics are computed from the float32 logits before
they are stored, so float16 storage of the logits leaves the reference attacks unchanged.

Every write goes to a temporary file in the same folder and is renamed into place,
so a killed run never leaves a file that reads as whole. A file that is there but does
not read as what was written (truncated, overwritten, missing a layer the epoch should
have) raises :class:`CorruptArtifactError`, which names the file and its run.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import unquote, urlparse

import numpy as np

from mia_bench.errors import UserError
from mia_bench.store.epoch_signals import (  # noqa: F401 - EpochSignals is read from here too
    LOGITS_DTYPES,
    EpochSignals,
    as_stored,
    check_logits_dtype,
)
from mia_bench.store.remote import Mirror, cache_dir, is_local, register, uploaded

if TYPE_CHECKING:
    import lightning as L

_EPOCH_FILE = re.compile(r"^epoch_(\d{3,})\.npz$")
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


class CorruptArtifactError(UserError):
    """A run's artifact that is missing or does not read whole.

    Attributes:
        path: the file.
        run: the MLflow run id it belongs to, when its folder says (else None).
    """

    def __init__(self, path: Path, problem: str, advice: str = "") -> None:
        self.path = Path(path)
        self.run = run_of(self.path)
        of_run = f" (run {self.run})" if self.run else ""
        advice = advice or (
            "it was cut short or overwritten: delete the file and train that run again, "
            "or leave the run out"
        )
        super().__init__(f"{self.path}{of_run}: {problem}; {advice}")


def run_of(path: Path) -> str | None:
    """The MLflow run id in an artifact path ``<location>/<run_id>/artifacts/...``, or None.

    >>> run_of(Path("mlruns/artifacts/" + "a" * 32 + "/artifacts/keep.npy")) == "a" * 32
    True
    >>> run_of(Path("elsewhere/keep.npy")) is None
    True
    """
    parts = Path(path).parts
    for i in range(len(parts) - 1, 0, -1):
        if parts[i] == "artifacts" and _RUN_ID.match(parts[i - 1]):
            return parts[i - 1]
    return None


def _read(path: Path, load: Callable[[Path], Any]) -> Any:
    """``load(path)``; a missing or unreadable file raises :class:`CorruptArtifactError`."""
    if not path.is_file():
        advice = "the run stopped before writing it, or it was removed: train that run again"
        raise CorruptArtifactError(path, "the file is missing", advice + ", or leave it out")
    try:
        return load(path)
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - a damaged file fails in any of numpy's layers
        raise CorruptArtifactError(path, f"cannot be read ({type(err).__name__}: {err})") from err


def read_npy(path: Path) -> np.ndarray:
    """One ``.npy`` array (no pickles); unreadable: :class:`CorruptArtifactError`."""
    return _read(Path(path), lambda p: np.load(p, allow_pickle=False))


def read_npz(
    path: Path, keys: Sequence[str] | None, only_present: bool = False
) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of an ``.npz`` (all with None; those present with ``only_present``)."""

    def load(p: Path) -> dict[str, np.ndarray]:
        with np.load(p, allow_pickle=False) as z:
            wanted = z.files if keys is None else keys
            wanted = [k for k in wanted if k in z.files] if only_present else wanted
            return {key: z[key] for key in wanted}  # reads (and CRC-checks) each array

    return _read(path, load)


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
    uploaded(path)
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


def stats_path(run_dir: Path, epoch: int) -> Path:
    """Where a run's sufficient statistics of one epoch live."""
    return Path(run_dir) / "stats" / f"epoch_{epoch:03d}.npz"


def embedding_path(run_dir: Path, epoch: int, layer: str) -> Path:
    """Where a run's embeddings of one layer and epoch live."""
    return Path(run_dir) / "embeddings" / f"epoch_{epoch:03d}" / f"{layer}.npy"


def save_keep(run_dir: Path, keep: np.ndarray) -> Path:
    """Save the run's keep row, ``bool[N]``."""
    return _save_npy(Path(run_dir) / "keep.npy", np.asarray(keep, dtype=bool))


def load_keep(run_dir: Path) -> np.ndarray:
    """Load the run's keep row, ``bool[N]``.

    Raises:
        CorruptArtifactError: ``keep.npy`` is missing, unreadable or not ``bool[N]``.
    """
    path = Path(run_dir) / "keep.npy"
    keep = read_npy(path)
    if keep.dtype != bool or keep.ndim != 1:
        raise CorruptArtifactError(path, f"holds {keep.dtype}{list(keep.shape)}, not bool[N]")
    return keep


def save_signals(run_dir: Path, signals: EpochSignals) -> list[Path]:
    """Save one epoch's embeddings, statistics, logits and labels; returns the written files.

    Signals without statistics get them (:func:`as_stored`). Embeddings and statistics are
    written first and the logits file last, so a present ``signals/epoch_XXX.npz`` means
    the epoch is complete.
    """
    if not signals.stats:
        half = np.asarray(signals.logits).dtype == np.float16
        signals = as_stored(signals, "float16" if half else "float32")
    written = [
        _save_npy(embedding_path(run_dir, signals.epoch, layer), np.asarray(values))
        for layer, values in signals.embeddings.items()
    ]
    stats = {k: np.asarray(v, dtype=np.float32) for k, v in signals.stats.items()}
    written.append(_save_npz(stats_path(run_dir, signals.epoch), stats))
    arrays = {"logits": signals.logits, "labels": signals.labels}
    written.append(_save_npz(signals_path(run_dir, signals.epoch), arrays))
    return written


def _save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> Path:
    return atomic_write(path, lambda f: write_npz(f, arrays))


def write_npz(f: BinaryIO, arrays: Mapping[str, np.ndarray]) -> None:
    """An ``.npz`` (``np.load`` reads it) with integer and boolean arrays compressed and
    floating-point ones stored as they are.

    Logits and statistics compress to about 93% of their size (float32 mantissas are
    noise to zlib) at 30 ms an epoch for a 5,000-example pool, seconds for LiRA's; labels
    compress to 14%.
    """
    with zipfile.ZipFile(f, "w", allowZip64=True) as archive:
        for name, value in arrays.items():
            value = np.asanyarray(value)
            floating = np.issubdtype(value.dtype, np.floating)
            kind = zipfile.ZIP_STORED if floating else zipfile.ZIP_DEFLATED
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = kind
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, value, allow_pickle=False)


def check_signals(run_dir: Path, epoch: int) -> None:
    """Check that an epoch's signals file opens and lists its arrays, without reading them
    (its index is at the end of the file, so a cut-short file fails here).

    Raises:
        CorruptArtifactError: the file is missing, cut short or lacks logits or labels.
    """

    def index(path: Path) -> None:
        with np.load(path, allow_pickle=False) as z:
            missing = {"logits", "labels"} - set(z.files)
        if missing:
            raise ValueError(f"it lacks {sorted(missing)}")

    _read(signals_path(run_dir, epoch), index)


def load_signals(run_dir: Path, epoch: int, layers: Sequence[str] = ()) -> EpochSignals:
    """Load one epoch's signals (and the named layers' embeddings).

    Raises:
        FileNotFoundError: the epoch was not recorded.
        CorruptArtifactError: its signals or embeddings are unreadable, of the wrong
            shape, or a layer's embeddings are missing.
    """
    path = signals_path(run_dir, epoch)
    if not path.exists():
        have = list_epochs(run_dir)
        raise FileNotFoundError(f"no signals for epoch {epoch} at {path}; epochs recorded: {have}")
    arrays = read_npz(path, ("logits", "labels"))
    logits, labels = arrays["logits"], arrays["labels"]  # [N, A, C], [N]
    if logits.ndim != 3 or labels.shape != logits.shape[:1]:
        shapes = f"logits {list(logits.shape)} and labels {list(labels.shape)}"
        raise CorruptArtifactError(path, f"holds {shapes}, not [N, A, C] and [N]")
    embeddings = {layer: _load_embedding(run_dir, epoch, layer, len(labels)) for layer in layers}
    stats_file = stats_path(run_dir, epoch)
    stats = read_npz(stats_file, None) if stats_file.is_file() else {}  # none: recorded before
    for name, values in stats.items():
        if values.shape != logits.shape[:2]:
            raise CorruptArtifactError(
                stats_file,
                f"holds {name} {list(values.shape)}, not [N, A] = {list(logits.shape[:2])}",
            )
    return EpochSignals(epoch, logits, labels, embeddings, stats)


def _load_embedding(run_dir: Path, epoch: int, layer: str, num_examples: int) -> np.ndarray:
    """One layer's ``[N, D]`` embeddings of an epoch, checked against the pool size."""
    path = embedding_path(run_dir, epoch, layer)
    if not path.is_file():
        have = sorted(p.stem for p in path.parent.glob("*.npy"))
        raise CorruptArtifactError(
            path,
            f"no embeddings of layer {layer!r} at epoch {epoch} (recorded layers: {have})",
            f"record them from the run's checkpoints: mia-bench record --group GROUP "
            f"--epoch {epoch} --layers {layer}",
        )
    values = read_npy(path)
    if values.ndim != 2 or len(values) != num_examples:
        raise CorruptArtifactError(path, f"holds {list(values.shape)}, not [{num_examples}, D]")
    return values


def list_epochs(run_dir: Path) -> list[int]:
    """Epochs with complete signals, ascending."""
    folder = Path(run_dir) / "signals"
    if not folder.is_dir():
        return []
    found = (_EPOCH_FILE.match(p.name) for p in folder.iterdir())
    return sorted(int(m.group(1)) for m in found if m)


def local_artifact_dir(artifact_uri: str, run_id: str | None = None) -> Path:
    """The local folder of a run's artifacts: the folder behind a local artifact URI, or,
    for a remote store, the run's cache folder (:mod:`mia_bench.store.remote`).

    Raises:
        ValueError: a remote artifact URI without the run id to name its cache folder.
    """
    parsed = urlparse(artifact_uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path) if parsed.scheme else artifact_uri)
    if run_id is None:
        raise ValueError(f"{artifact_uri} is a remote artifact store: give the run id")
    return cache_dir(run_id)


def run_artifact_dir(trainer: L.Trainer) -> Path:
    """The folder where this run's artifacts go.

    The MLflow run's artifact folder when an ``MLFlowLogger`` is attached (for a remote
    artifact store, a local folder whose files are uploaded as they are written:
    :class:`~mia_bench.store.remote.Mirror`), otherwise ``<default_root_dir>/mia_artifacts``.
    """
    from lightning.pytorch.loggers import MLFlowLogger

    for logger in trainer.loggers:
        if isinstance(logger, MLFlowLogger) and logger.run_id:
            info = logger.experiment.get_run(logger.run_id).info
            folder = local_artifact_dir(info.artifact_uri, info.run_id)
            if not is_local(info.artifact_uri):
                register(Mirror(info.artifact_uri, logger._tracking_uri, folder))
            return folder
    return Path(trainer.default_root_dir) / "mia_artifacts"
