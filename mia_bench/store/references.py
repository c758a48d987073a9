"""Load the signals of a group's runs (see :mod:`mia_bench.store.groups`) as references.

A reference is another run of a group (or of another group: "the attacker did not
know the recipe") whose keep row and signals of the same epoch are known to the
attacker. References must share the target's pool: the same dataset, pool size and
split seed; other groups are refused with a clear error.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mia_bench.errors import UserError
from mia_bench.statistics import ReferenceStats
from mia_bench.store.artifacts import CorruptArtifactError, EpochSignals, load_keep, load_signals
from mia_bench.store.group_stats import stack_statistics
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
class ReferenceNeeds:
    """What the attacks read of the references (see :func:`mia_bench.audit.engine.needs_of`).

    Attributes:
        statistics: sufficient statistics (:mod:`mia_bench.statistics`), stacked as
            ``[M, N, A]`` memmaps.
        logits: the full logits ``[N, A, C]`` of every reference (NN attacks only).
        layers: embedding layers to load.
    """

    statistics: tuple[str, ...] = ()
    logits: bool = False
    layers: tuple[str, ...] = ()

    @property
    def signals(self) -> bool:
        """Whether each reference's full signals must be loaded."""
        return self.logits or bool(self.layers)


@dataclass(frozen=True)
class References:
    """The references of one target, as the attacks read them.

    Attributes:
        keep: ``bool[R, N]``.
        run_ids: the R runs used.
        epochs: the epoch used for each run.
        stats: their sufficient statistics ``[R, N, A]``, read in blocks (or None).
        logits: ``float32[R, N, A, C]``, only when an attack reads full logits.
        embeddings: layer -> ``float32[R, N, D]``.
    """

    keep: np.ndarray
    run_ids: list[str]
    epochs: list[int]
    stats: ReferenceStats | None = None
    logits: np.ndarray | None = None
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadedRun:
    """One run's keep row (and, when needed, signals) at one epoch, loaded once."""

    run: GroupRun
    epoch: int
    keep: np.ndarray
    signals: EpochSignals | None = None


def load_runs(
    runs: Sequence[GroupRun],
    epoch: int | str,
    layers: Sequence[str] = (),
    skip_corrupt: bool = True,
    signals: bool = True,
) -> list[LoadedRun]:
    """Load each run's keep row (and signals at ``epoch``, an int or ``"last"``) once.

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
            run.fetch(resolved, layers if signals else ())
            keep = load_keep(run.artifact_dir)
            values = load_signals(run.artifact_dir, resolved, layers) if signals else None
        except CorruptArtifactError as err:
            if not skip_corrupt:
                raise
            _warn_left_out(run, err)
            continue
        loaded.append(LoadedRun(run, resolved, keep, values))
    return loaded


def _warn_left_out(run: GroupRun, err: Exception) -> None:
    warnings.warn(
        f"left out run {run.run_index} ({run.run_id}) of group {run.group!r}: {err}",
        stacklevel=3,
    )


class ReferencePool:
    """The runs a target's references are drawn from, loaded once for one epoch.

    Their statistics are stacked into ``[M, N, A]`` memmaps
    (:func:`~mia_bench.store.group_stats.stack_statistics`); each target's references
    are rows of them.
    """

    def __init__(self, runs: list[LoadedRun], stats: dict[str, np.ndarray]) -> None:
        self.runs = runs
        self.stats = stats
        self.keep = np.stack([r.keep for r in runs]) if runs else np.zeros((0, 0), bool)

    def get(self, run_id: str) -> LoadedRun | None:
        """The pool's run ``run_id``, or None."""
        return next((r for r in self.runs if r.run.run_id == run_id), None)

    def references(
        self, target_run_id: str | None = None, target_keep: np.ndarray | None = None
    ) -> References | None:
        """The pool's runs other than the target; None when none is left.

        The target's own run, and any run trained on exactly ``target_keep`` (the
        target's training set: with the same seed it would be the target itself), are
        left out.
        """
        rows = [
            i
            for i, r in enumerate(self.runs)
            if r.run.run_id != target_run_id
            and (target_keep is None or not np.array_equal(r.keep, target_keep))
        ]
        if not rows:
            return None
        picked = [self.runs[i] for i in rows]
        full = [r.signals for r in picked if r.signals is not None]
        return References(
            keep=self.keep[rows],  # [R, N]
            run_ids=[r.run.run_id for r in picked],
            epochs=[r.epoch for r in picked],
            stats=ReferenceStats(self.stats, rows) if self.stats else None,
            logits=np.stack([s.logits for s in full]) if len(full) == len(rows) else None,
            embeddings={
                layer: np.stack([s.embeddings[layer] for s in full])  # [R, N, D]
                for layer in (full[0].embeddings if len(full) == len(rows) else ())
            },
        )


def open_pool(
    runs: Sequence[GroupRun],
    epoch: int | str,
    needs: ReferenceNeeds,
    skip_corrupt: bool = True,
) -> ReferencePool:
    """Load ``runs`` at ``epoch`` as a reference pool: keep rows, the statistics ``needs``
    names stacked, and full signals only when ``needs`` asks for them (see
    :func:`load_runs` for runs without the epoch or with damaged files)."""
    loaded = load_runs(runs, epoch, needs.layers, skip_corrupt, signals=needs.signals)
    sources = [(r.run.artifact_dir, r.epoch) for r in loaded]

    def left_out(position: int, err: Exception) -> None:
        _warn_left_out(loaded[position].run, err)

    stats, kept = stack_statistics(
        sources, needs.statistics, on_corrupt=left_out if skip_corrupt else None
    )
    return ReferencePool([loaded[i] for i in kept], stats)


def load_references(
    runs: Sequence[GroupRun],
    epoch: int | str,
    needs: ReferenceNeeds,
    target_keep: np.ndarray | None = None,
) -> References | None:
    """The references of one target among ``runs`` at ``epoch`` (see :func:`open_pool`)."""
    return open_pool(runs, epoch, needs).references(target_keep=target_keep)
