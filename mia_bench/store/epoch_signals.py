"""What a run outputs on the pool at one epoch, and how it is prepared for storage."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from mia_bench.statistics import RECORDED, compute_statistics

LOGITS_DTYPES = ("float32", "float16")  # how logits may be stored


@dataclass(frozen=True)
class EpochSignals:
    """What a run outputs on the whole pool at one epoch.

    Attributes:
        epoch: the epoch (0-based) after which the signals were computed.
        logits: ``float32[N, A, C]``, A query views (view 0 = plain).
        labels: ``int64[N]``.
        embeddings: layer name -> ``float32[N, D]`` (view 0).
        stats: statistic name -> ``float32[N, A]`` (:mod:`mia_bench.statistics`),
            computed from the float32 logits.
    """

    epoch: int
    logits: np.ndarray
    labels: np.ndarray
    embeddings: Mapping[str, np.ndarray] = field(default_factory=dict)
    stats: Mapping[str, np.ndarray] = field(default_factory=dict)


def check_logits_dtype(logits_dtype: str) -> None:
    """Refuse a logits storage type other than float32 and float16.

    >>> check_logits_dtype("float64")
    Traceback (most recent call last):
    ValueError: logits_dtype must be one of ('float32', 'float16'), got 'float64'
    """
    if logits_dtype not in LOGITS_DTYPES:
        raise ValueError(f"logits_dtype must be one of {LOGITS_DTYPES}, got {logits_dtype!r}")


def as_stored(signals: EpochSignals, logits_dtype: str = "float32") -> EpochSignals:
    """The signals as they are stored: statistics computed from the float32 logits, then
    the logits in ``logits_dtype``.

    float16 logits beyond its range (65504) would read back as inf: such an epoch keeps
    float32 logits, with a warning.

    Raises:
        ValueError: for a dtype other than float32 and float16.
    """
    check_logits_dtype(logits_dtype)
    logits = np.asarray(signals.logits, dtype=np.float32)
    stats = dict(signals.stats) or compute_statistics(logits, signals.labels, RECORDED)
    with np.errstate(over="ignore"):  # checked just below
        stored = logits.astype(logits_dtype)
    if not np.isfinite(stored).all() and np.isfinite(logits).all():
        warnings.warn(
            f"epoch {signals.epoch}: logits reach {np.abs(logits).max():.4g}, beyond float16's "
            "range; this epoch keeps float32 logits",
            stacklevel=2,
        )
        stored = logits
    return EpochSignals(signals.epoch, stored, signals.labels, signals.embeddings, stats)
