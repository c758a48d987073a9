"""Checkpoints of a run: one per epoch, written atomically, kept by a retention rule.

A run's checkpoints live in ``<checkpoint_dir>/<run_id>/``:

    epoch_XXX.ckpt    the model after epoch XXX (0-based), written once the epoch's
                      signals, attacks and metrics are done
    last.ckpt         a hard link to (or copy of) the newest epoch checkpoint

Which epoch checkpoints stay is :class:`CheckpointRetention` (``--checkpoints.*``): every
n-th epoch's (``(epoch + 1) % n == 0``, like ``--signals.every_n_epochs``) and the newest,
which a resume starts from and which is only removed once a newer one is whole. Kept
checkpoints other than the newest are stripped to the weights (no optimizer or scheduler
state): enough to re-record signals (``mia-bench record``), half or a third of the size.

Every file is written to a temporary name in its own folder, flushed to disk and renamed
into place, so a run killed at any moment (or a full disk) never leaves a file that
reads as whole. An epoch is *complete* when its checkpoint exists; a resumed run
continues from the newest complete epoch and first removes what a killed attempt left
beyond it (temporary files, signals and embeddings of later epochs).
"""

from __future__ import annotations

import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback, Checkpoint
from lightning.pytorch.utilities import rank_zero_warn

from mia_bench.store.artifacts import (
    atomic_write,
    list_epochs,
    remove_temporary_files,
    signals_path,
)
from mia_bench.store.remote import Mirror, removed, uploaded
from mia_bench.store.retention import CheckpointRetention, strip_to_weights

_EPOCH_CKPT = re.compile(r"^epoch_(\d{3,})\.ckpt$")


def epoch_checkpoint_path(dirpath: Path, epoch: int) -> Path:
    """Where the checkpoint of ``epoch`` lives.

    >>> epoch_checkpoint_path(Path("ck"), 7).name
    'epoch_007.ckpt'
    """
    return Path(dirpath) / f"epoch_{epoch:03d}.ckpt"


def is_whole(path: Path) -> bool:
    """Whether a checkpoint file opens as a whole zip archive (``torch.save``'s format).

    A truncated file lacks the archive's central directory at its end, so this is a
    cheap check that reads no tensor.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return bool(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def epoch_checkpoints(dirpath: Path) -> dict[int, Path]:
    """``epoch -> epoch_XXX.ckpt`` in a run's checkpoint folder, ascending by epoch."""
    folder = Path(dirpath)
    found = [(_EPOCH_CKPT.match(p.name), p) for p in folder.iterdir()] if folder.is_dir() else []
    return dict(sorted((int(m.group(1)), p) for m, p in found if m))


def complete_epochs(dirpath: Path) -> list[int]:
    """Epochs whose checkpoint is present and whole, ascending."""
    return [e for e, path in epoch_checkpoints(dirpath).items() if is_whole(path)]


def resume_checkpoint(dirpath: Path) -> Path | None:
    """The checkpoint to resume from: the newest whole epoch checkpoint, or None."""
    epochs = complete_epochs(dirpath)
    return epoch_checkpoint_path(dirpath, epochs[-1]) if epochs else None


def checkpoint_epoch(path: Path) -> int:
    """The epoch of an ``epoch_XXX.ckpt`` file, from its name."""
    match = _EPOCH_CKPT.match(Path(path).name)
    if match is None:
        raise ValueError(f"{path} is not an epoch checkpoint (epoch_XXX.ckpt)")
    return int(match.group(1))


def discard_after(run_dir: Path, checkpoint_dir: Path, epoch: int | None) -> list[Path]:
    """Remove what a killed attempt wrote beyond the last complete ``epoch``.

    Temporary files of both folders, checkpoints, signals and embeddings of later epochs
    (``epoch=None``: of every epoch) go; returns the removed paths. Only the run's
    lease holder calls this, so no other process is writing these folders.
    """
    last = -1 if epoch is None else epoch
    removed = remove_temporary_files(run_dir) + remove_temporary_files(checkpoint_dir)
    for later in (e for e in list_epochs(run_dir) if e > last):
        removed += _remove(signals_path(run_dir, later))
    for folder in sorted((Path(run_dir) / "embeddings").glob("epoch_*")):
        if folder.name[6:].isdigit() and int(folder.name[6:]) > last:
            removed += _remove(folder)
    for epoch, path in epoch_checkpoints(checkpoint_dir).items():
        if epoch > last:
            removed += _remove(path)
    return removed


def _remove(path: Path) -> list[Path]:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    removed(path)  # and from a remote store's copy
    return [path]


def discard_stored_after(files: Mirror, checkpoints: Mirror, epoch: int | None) -> int:
    """:func:`discard_after` for what a killed attempt on another machine uploaded to a
    remote artifact store beyond ``epoch``; returns how many files or folders went."""
    last = -1 if epoch is None else epoch
    doomed = [files.folder / "signals" / n for n in files.listing("signals") if _epoch_of(n) > last]
    doomed += [
        files.folder / "embeddings" / n for n in files.listing("embeddings") if _epoch_of(n) > last
    ]
    doomed += [checkpoints.folder / n for n in checkpoints.listing() if _epoch_of(n) > last]
    for path in doomed:
        (checkpoints if path.parent == checkpoints.folder else files).delete(path)
    return len(doomed)


def _epoch_of(name: str) -> int:
    """The epoch in ``epoch_XXX.npz``, ``epoch_XXX.ckpt`` or ``epoch_XXX``; -1 for others.

    >>> _epoch_of("epoch_012.ckpt"), _epoch_of("epoch_003"), _epoch_of("last.ckpt")
    (12, 3, -1)
    """
    stem = name.split(".")[0]
    digits = stem[6:]
    return int(digits) if stem.startswith("epoch_") and digits.isdigit() else -1


def newest_checkpoint(checkpoint_dir: Path, mirrors: tuple[Mirror, Mirror] | None) -> Path | None:
    """:func:`resume_checkpoint`, after fetching the store's newest checkpoint when the
    run's artifacts are remote (``mirrors``: files, checkpoints) and this machine's is older."""
    if mirrors is not None:
        fetch_newest(mirrors[1])
    return resume_checkpoint(checkpoint_dir)


def discard_beyond(
    run_dir: Path, checkpoint_dir: Path, epoch: int | None, mirrors: tuple[Mirror, Mirror] | None
) -> None:
    """:func:`discard_after`, and with remote artifacts the same in the store
    (:func:`discard_stored_after`), then upload what this machine wrote but a kill kept
    from being uploaded."""
    discard_after(run_dir, checkpoint_dir, epoch)
    if mirrors is not None:
        discard_stored_after(*mirrors, epoch)
        for mirror in mirrors:
            mirror.push_missing()


def fetch_newest(checkpoints: Mirror) -> Path | None:
    """Download the store's newest epoch checkpoint when it is newer than the local
    folder's (the run was last trained on another machine); its local path, or None."""
    local = complete_epochs(checkpoints.folder)
    stored = sorted(e for e in map(_epoch_of, checkpoints.listing()) if e >= 0)
    if not stored or (local and local[-1] >= stored[-1]):
        return None
    return checkpoints.fetch(epoch_checkpoint_path(Path(""), stored[-1]).name)


def link_last(dirpath: Path, source: Path) -> Path:
    """Point ``last.ckpt`` at ``source`` atomically (a hard link; a copy where links fail)."""
    last = Path(dirpath) / "last.ckpt"
    tmp = last.with_name(f".{last.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
        os.replace(tmp, last)
    except OSError:
        tmp.unlink(missing_ok=True)
        atomic_write(last, lambda f: f.write(Path(source).read_bytes()))
    return last


def prune(dirpath: Path, newest: int, retention: CheckpointRetention, since: int = 0) -> list[Path]:
    """Apply ``retention`` to the epoch checkpoints from ``since`` up to (not including)
    ``newest``; returns the removed files.

    Call it only once ``newest``'s checkpoint is whole (and ``last.ckpt`` points at it).
    """
    removed = []
    for epoch, path in epoch_checkpoints(dirpath).items():
        if not since <= epoch < newest:
            continue
        if not retention.keeps(epoch):
            removed += _remove(path)
        elif retention.weights_only:
            try:
                strip_to_weights(path)
            except Exception as err:  # noqa: BLE001 - a checkpoint torch cannot read safely
                rank_zero_warn(f"{path} kept whole: its weights could not be split off ({err})")
    return removed


class EpochCheckpoint(Checkpoint):
    """Saves ``epoch_XXX.ckpt`` atomically at the very end of every training epoch.

    As a ``Checkpoint`` it runs after every other callback and the LightningModule's
    ``on_train_epoch_end``, so the checkpoint of epoch E is written only once E's
    signals are recorded and its metrics computed: a present checkpoint means a complete
    epoch. Once it is in place, the metrics the run's :class:`BufferedMLFlowLogger`
    held back for steps <= E are sent to MLflow (they travel inside the checkpoint too,
    so a kill between the two loses none: a resumed run sends whichever are missing).
    Then older checkpoints are kept, stripped or removed by ``retention``.

    Args:
        dirpath: the run's checkpoint folder.
        retention: which older checkpoints stay (default: every 10th epoch's, weights only).
    """

    def __init__(self, dirpath: Path, retention: CheckpointRetention | None = None) -> None:
        self.dirpath = Path(dirpath)
        self.retention = retention or CheckpointRetention()
        self.saved: list[Path] = []
        self.pruned_to = 0  # epochs below this were pruned by this process already

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        path = epoch_checkpoint_path(self.dirpath, epoch)
        save_atomically(trainer, path)
        link_last(self.dirpath, path)
        self.saved.append(path)
        commit_metrics(trainer, epoch)
        # the first prune of this process looks at every older file (a killed attempt may
        # have left some unpruned); later ones only at those the last epoch superseded
        prune(self.dirpath, epoch, self.retention, since=self.pruned_to)
        self.pruned_to = epoch

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        # a resume from a final checkpoint whose pruning a kill cut short trains no epoch
        epochs = complete_epochs(self.dirpath)
        if epochs:
            prune(self.dirpath, epochs[-1], self.retention, since=self.pruned_to)

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict) -> None:
        for logger in trainer.loggers:
            if hasattr(logger, "pending_metrics"):
                checkpoint["mia_pending_metrics"] = logger.pending_metrics()

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict) -> None:
        pending = checkpoint.get("mia_pending_metrics") or []
        for logger in trainer.loggers:
            if hasattr(logger, "send_missing"):
                logger.send_missing(pending)


def commit_metrics(trainer: Any, epoch: int) -> None:
    """Send the metrics every logger held back for steps <= ``epoch`` (see ``commit``)."""
    for logger in trainer.loggers:
        if hasattr(logger, "commit"):
            logger.commit(epoch)


class EpochCommit(Callback):
    """Sends an epoch's metrics to MLflow when the next epoch starts, without checkpoints.

    With ``--trainer.enable_checkpointing false`` no :class:`EpochCheckpoint` commits the
    metrics the :class:`~mia_bench.tracking.BufferedMLFlowLogger` holds back. Every value
    of epoch E is logged by the time epoch E + 1 starts (this callback cannot run after
    the LightningModule's own ``on_train_epoch_end``, as a ``Checkpoint`` does), and the
    logger sends the rest when the fit ends. Such a run cannot be resumed.
    """

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.current_epoch > 0:
            commit_metrics(trainer, trainer.current_epoch - 1)


def save_atomically(trainer: Any, path: Path) -> Path:
    """``trainer.save_checkpoint`` to a temporary file beside ``path``, then rename it.

    The temporary file is flushed to disk before the rename and removed when the save
    fails (a full disk), so ``path`` is either the old file, absent, or whole.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        trainer.save_checkpoint(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    uploaded(path)  # a run with remote artifacts: to its checkpoints/ there
    return path
