"""A group's sufficient statistics of one epoch as ``[M, N, A]`` memory-mapped arrays.

Each run stores its statistics per epoch (``stats/epoch_XXX.npz``, see
:mod:`mia_bench.store.artifacts`). An audit of M runs stacks them once, run by run, into
one raw float32 file per statistic, maps the files read-only and removes them at once:
the mapping keeps the data readable until the arrays are dropped, and nothing is left on
disk, even when the audit is killed later. Leave-one-out audits then pick rows of the
arrays (:class:`~mia_bench.statistics.ReferenceStats`) instead of loading
M - 1 runs for every target; memory holds the pages being read, not M copies.

The files go in a folder next to the runs' artifacts (the store's disk, not ``/tmp``,
which may be memory); one a killed stacking left behind is removed by the next.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mia_bench.statistics import compute_statistics
from mia_bench.store.artifacts import (
    CorruptArtifactError,
    check_signals,
    load_signals,
    read_npz,
    stats_path,
)
from mia_bench.store.leases import pid_alive

_PREFIX = ".mia-group-stats."


def load_statistics(run_dir: Path, epoch: int, names: Sequence[str]) -> dict[str, np.ndarray]:
    """One run's named statistics of one epoch, ``float32[N, A]`` each.

    Statistics the run did not store (runs recorded before they were, or a temperature
    not recorded) are computed once from the epoch's logits. The signals file is checked
    to open either way (:func:`~mia_bench.store.artifacts.check_signals`), so a run with
    damaged signals is reported even when its statistics are whole.

    Raises:
        CorruptArtifactError: the statistics or the signals are unreadable.
    """
    check_signals(run_dir, epoch)
    path = stats_path(run_dir, epoch)
    out = read_npz(path, names, only_present=True) if path.is_file() else {}
    missing = [n for n in names if n not in out]
    if missing:
        signals = load_signals(run_dir, epoch)
        out |= compute_statistics(signals.logits, signals.labels, missing)
    return {n: out[n] for n in names}


def stack_statistics(
    sources: Sequence[tuple[Path, int]],
    names: Sequence[str],
    on_corrupt: Callable[[int, CorruptArtifactError], None] | None = None,
) -> tuple[dict[str, np.ndarray], list[int]]:
    """The statistics of ``sources`` (``(run artifact folder, epoch)``) as ``[M, N, A]``.

    Args:
        sources: one ``(folder, epoch)`` per run, in order.
        names: the statistics to stack.
        on_corrupt: called with a source's position and its error when its statistics
            are unreadable or of another shape; the source is then left out. None: raise.

    Returns:
        ``(name -> read-only float32[M, N, A] memmap, the positions of the M sources used)``.

    Raises:
        CorruptArtifactError: a source is damaged and ``on_corrupt`` is None.
    """
    if not sources or not names:
        return {n: np.zeros((0, 0, 0), np.float32) for n in names}, list(range(len(sources)))
    folder = _scratch_folder(Path(sources[0][0]).parent.parent)  # the store's artifact root
    try:
        files = {n: open(folder / n, "wb") for n in names}  # noqa: SIM115 - closed below
        try:
            shape, kept = _write_rows(sources, names, files, on_corrupt)
        finally:
            for f in files.values():
                f.close()
        arrays = {
            n: np.memmap(folder / n, dtype=np.float32, mode="r", shape=(len(kept), *shape))
            if kept
            else np.zeros((0, 0, 0), np.float32)
            for n in names
        }
        return arrays, kept
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # the maps keep the data until dropped


def _write_rows(
    sources: Sequence[tuple[Path, int]],
    names: Sequence[str],
    files: dict,
    on_corrupt: Callable[[int, CorruptArtifactError], None] | None,
) -> tuple[tuple[int, int], list[int]]:
    """Append each source's statistics to the files; returns ``(N, A)`` and the kept."""
    shape: tuple[int, int] | None = None
    kept = []
    for position, (run_dir, epoch) in enumerate(sources):
        try:
            stats = _checked(load_statistics(run_dir, epoch, names), shape, run_dir, epoch)
        except CorruptArtifactError as err:
            if on_corrupt is None:
                raise
            on_corrupt(position, err)
            continue
        for name in names:
            files[name].write(stats[name].tobytes())
        shape = stats[names[0]].shape
        kept.append(position)
    return shape or (0, 0), kept


def _checked(
    stats: dict[str, np.ndarray], shape: tuple[int, int] | None, run_dir: Path, epoch: int
) -> dict[str, np.ndarray]:
    """``stats`` as contiguous float32 ``[N, A]``, all of ``shape`` (the first run's)."""
    out = {}
    for name, values in stats.items():
        values = np.ascontiguousarray(values, dtype=np.float32)
        if values.ndim != 2 or (shape is not None and values.shape != shape):
            raise CorruptArtifactError(
                stats_path(run_dir, epoch),
                f"holds {name} {list(values.shape)}, not [N, A] like the other runs' {shape}",
            )
        shape = values.shape
        out[name] = values
    return out


def _scratch_folder(near: Path) -> Path:
    """A fresh folder for the files, after removing those of dead processes."""
    try:
        near.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(near)
        prefix = f"{_PREFIX}{socket.gethostname()}-{os.getpid()}-"
        return Path(tempfile.mkdtemp(prefix=prefix, dir=near))
    except OSError:
        return Path(tempfile.mkdtemp(prefix=_PREFIX))


def _remove_abandoned(near: Path) -> None:
    """Remove scratch folders this host's dead processes left (killed while stacking)."""
    host = socket.gethostname()
    for folder in near.glob(f"{_PREFIX}{host}-*"):
        pid = folder.name[len(_PREFIX) + len(host) + 1 :].split("-")[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
