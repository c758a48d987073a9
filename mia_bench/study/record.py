"""Record more layers of a finished group, from the checkpoints its runs kept.

A group trained with ``--signals.layers [embedding]`` can still be swept layer by layer
(the Embedding Attack Project's depth question) at the epochs whose checkpoints the runs
kept (``--checkpoints.every_n_epochs``, default every 10th, and the last): each run's
checkpoint of the epoch is reloaded with the config logged with the run, the pool is
scored once more with forward hooks on the new layers, and their embeddings are written
next to the recorded ones (``embeddings/epoch_XXX/<layer>.npy``, atomically). The
recorded logits are the check: the reloaded model must reproduce them, or nothing is
written for that run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mia_bench.audit.checkpoint import config_of_run, signals_of_checkpoint
from mia_bench.errors import UserError
from mia_bench.store.artifacts import _save_npy, embedding_path, load_signals
from mia_bench.store.checkpoints import checkpoint_epoch, epoch_checkpoint_path, epoch_checkpoints
from mia_bench.store.groups import GroupRun, client_and_experiment, group_runs
from mia_bench.store.remote import Mirror, RemoteFolder, forget, register
from mia_bench.store.runs import MlflowSettings

TOLERANCE = 1e-3  # logits recomputed on CPU vs recorded (possibly on GPU)


def checkpoint_of(settings: MlflowSettings, run: GroupRun, epoch: int) -> Path:
    """The run's checkpoint of ``epoch``, or a one-line error naming the epochs it kept.

    Raises:
        UserError: the run kept no checkpoint of ``epoch`` (``--checkpoints.*``).
    """
    folder = Path(settings.checkpoint_dir) / run.run_id
    kept = epoch_checkpoints(folder)
    if epoch in kept:
        return kept[epoch]
    if run.remote is not None:  # kept in the run's artifacts: downloaded once
        stored = RemoteFolder(run.artifact_uri, run.tracking_uri, folder, prefix="checkpoints")
        name = epoch_checkpoint_path(folder, epoch).name
        if stored.has(name):
            return stored.fetch(name)
        kept = {checkpoint_epoch(Path(n)): folder / n for n in stored.listing() if n != "last.ckpt"}
    where = f"run {run.run_index} of group {run.group!r} kept no checkpoint of epoch {epoch}"
    if not kept:
        raise UserError(
            f"{where}, nor of any other epoch, in {folder} (trained with "
            "--trainer.enable_checkpointing false?): its layers cannot be recorded afterwards"
        )
    raise UserError(
        f"{where}; it has checkpoints of epochs {', '.join(map(str, kept))}: pick one of "
        "them with --epoch (train with --checkpoints.every_n_epochs N to keep more)"
    )


def record_run_layers(
    settings: MlflowSettings, run: GroupRun, epoch: int, layers: Sequence[str]
) -> list[Path]:
    """Record ``layers`` of one run at ``epoch``; returns the files written.

    Raises:
        ValueError: if the reloaded model does not reproduce the recorded logits.
    """
    client, _ = client_and_experiment(settings)
    checkpoint = checkpoint_of(settings, run, epoch)
    found = config_of_run(client, checkpoint)
    if found is None or found[0] is None:
        raise ValueError(
            f"{checkpoint} belongs to no MLflow run of {settings.tracking_uri} that logged "
            "its config.yaml"
        )
    signals, _ = signals_of_checkpoint(checkpoint, found[0], tuple(layers))
    recorded = load_signals(run.fetch(epoch), epoch)
    gap = float(np.abs(signals.logits[:, 0] - recorded.logits[:, 0]).max())  # plain view
    if gap > TOLERANCE:
        raise ValueError(
            f"run {run.run_index}: the checkpoint of epoch {epoch} gives logits up to {gap:.2g} "
            "away from the recorded ones; was the run resumed or its config changed? "
            "Nothing was written for it."
        )
    if run.remote is not None:  # the new files are uploaded as they are written
        register(Mirror(run.artifact_uri, run.tracking_uri, run.artifact_dir))
    try:
        return [
            _save_npy(embedding_path(run.artifact_dir, epoch, layer), np.asarray(values))
            for layer, values in signals.embeddings.items()
        ]
    finally:
        forget(run.artifact_dir)


def record_group_layers(
    settings: MlflowSettings, group: str, epoch: int, layers: Sequence[str]
) -> int:
    """Record ``layers`` at ``epoch`` for every run of ``group``; returns how many runs.

    Runs that already have every layer at that epoch are skipped, so a killed call
    resumes where it stopped. Every other run's checkpoint of ``epoch`` is looked up
    before any is re-scored (:func:`checkpoint_of`).
    """
    client, exp_id = client_and_experiment(settings)
    runs = group_runs(client, exp_id, group)
    if not runs:
        raise ValueError(f"group {group!r} has no runs in {settings.tracking_uri}")
    todo = {run.run_id: _missing(run, epoch, layers) for run in runs}
    for run in runs:
        if todo[run.run_id]:
            checkpoint_of(settings, run, epoch)
    for run in tqdm(runs, desc=f"record {group} epoch {epoch}", unit="run"):
        if todo[run.run_id]:
            record_run_layers(settings, run, epoch, todo[run.run_id])
    return len(runs)


def _missing(run: GroupRun, epoch: int, layers: Sequence[str]) -> list[str]:
    """The layers of ``layers`` the run has no embeddings of at ``epoch``."""
    return [n for n in layers if not run.has(f"embeddings/epoch_{epoch:03d}/{n}.npy")]
