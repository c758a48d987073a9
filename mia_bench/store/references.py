"""Load the signals of a group's runs (see :mod:`mia_bench.store.groups`) as references.

A reference is another run of a group (or of another group: "the attacker did not
know the recipe") whose keep row and signals of the same epoch are known to the
attacker. References must share the target's pool: the same dataset, pool size and
split seed; other groups are refused with a clear error.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mia_bench.errors import UserError
from mia_bench.store.artifacts import CorruptArtifactError, EpochSignals, load_keep, load_signals
from mia_bench.store.groups import GroupRun

POOL_TAGS = ("mia.dataset", "mia.num_examples", "mia.split_seed")


def check_same_pool(target_tags: dict[str, str], refs: Sequence[GroupRun]) -> None:
    """Refuse references whose pool differs from the target's.

    Raises:
        UserError: naming the reference group and the tag that differs.
    """
    for ref in refs:
        for tag in POOL_TAGS:
            if ref.tags.get(tag) != target_tags.get(tag):
                raise UserError(
                    f"reference group {ref.group!r} (run {ref.run_index}) has {tag}="
                    f"{ref.tags.get(tag)!r} but the target has {target_tags.get(tag)!r}: "
                    "references must be trained on the same pool with the same split seed."
                )


@dataclass(frozen=True)
class References:
    """Reference signals stacked for the attacks.

    Attributes:
        logits: ``float32[R, N, A, C]``.
        keep: ``bool[R, N]``.
        embeddings: layer -> ``float32[R, N, D]``.
        run_ids: the R runs used.
        epochs: the epoch used for each run.
    """

    logits: np.ndarray
    keep: np.ndarray
    embeddings: dict[str, np.ndarray]
    run_ids: list[str]
    epochs: list[int]


@dataclass(frozen=True)
class LoadedRun:
    """One run's keep row and signals at one epoch, loaded once."""

    run: GroupRun
    epoch: int
    keep: np.ndarray
    signals: EpochSignals


def load_runs(
    runs: Sequence[GroupRun],
    epoch: int | str,
    layers: Sequence[str] = (),
    skip_corrupt: bool = True,
) -> list[LoadedRun]:
    """Load each run's keep row and signals at ``epoch`` (an int, or ``"last"``) once.

    A run without signals of that epoch is left out (a reference that stopped early
    takes no part). A run whose files are corrupt or unreadable
    (:class:`~mia_bench.store.artifacts.CorruptArtifactError`) is left out with a warning
    naming the file and the run when ``skip_corrupt``, else the error stops the load.
    """
    loaded = []
    for run in runs:
        resolved = run.resolve_epoch(epoch)
        if resolved is None:
            continue
        try:
            keep = load_keep(run.artifact_dir)
            signals = load_signals(run.artifact_dir, resolved, layers)
        except CorruptArtifactError as err:
            if not skip_corrupt:
                raise
            warnings.warn(
                f"left out run {run.run_index} ({run.run_id}) of group {run.group!r}: {err}",
                stacklevel=2,
            )
            continue
        loaded.append(LoadedRun(run, resolved, keep, signals))
    return loaded


def stack_references(
    loaded: Sequence[LoadedRun],
    target_run_id: str | None = None,
    target_keep: np.ndarray | None = None,
) -> References | None:
    """The loaded runs other than the target, stacked; None when none is left.

    The target's own run, and any run trained on exactly ``target_keep`` (the target's
    training set: with the same seed it would be the target itself), are left out.
    """
    picked = [
        r
        for r in loaded
        if r.run.run_id != target_run_id
        and (target_keep is None or not np.array_equal(r.keep, target_keep))
    ]
    if not picked:
        return None
    layers = list(picked[0].signals.embeddings)
    return References(
        logits=np.stack([r.signals.logits for r in picked]),  # [R, N, A, C]
        keep=np.stack([r.keep for r in picked]),  # [R, N]
        embeddings={
            layer: np.stack([r.signals.embeddings[layer] for r in picked]) for layer in layers
        },  # [R, N, D]
        run_ids=[r.run.run_id for r in picked],
        epochs=[r.epoch for r in picked],
    )


def load_references(
    runs: Sequence[GroupRun],
    epoch: int | str,
    layers: Sequence[str] = (),
    target_keep: np.ndarray | None = None,
) -> References | None:
    """Stack the signals of ``runs`` at ``epoch`` (see :func:`load_runs`), or None."""
    return stack_references(load_runs(runs, epoch, layers), target_keep=target_keep)
