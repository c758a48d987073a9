"""Sufficient statistics of a run's signals: what reference attacks read per example and view.

LiRA (Carlini et al. 2022) reads the scaled logit of the true label; RMIA (Zarifzadeh et al.
2024) its probability, at a softmax temperature; the calibrated loss attacks (Watson et al.
2022, Ye et al. 2022, Sablayrolles et al. 2019) and GMIA's direct test (Long et al. 2018) its
loss on the plain view. All of them are functions of one number per example and view, so a
run's signals of one epoch reduce to a few ``[N, A]`` arrays, computed once when the signals
are recorded, instead of the full logits ``[N, A, C]`` per reference and per target.

Names:

* ``scaled_logit``: ``log p_y - log(1 - p_y)`` (:func:`mia_bench.signals.scaled_logit`);
* ``log_p``: ``log p_y``, the log-softmax of the true label (minus the loss);
* ``log_p_t<T>``: ``log softmax(z / T)_y``, the same at temperature ``T`` (``log_p_t2``).

They are computed in float64 from the logits and stored as float32.

A group's statistics of one epoch are ``[M, N, A]`` arrays (memory-mapped from the store,
see :mod:`mia_bench.store.group_stats`); a target's references are a subset of their rows
(all runs but the target, for a leave-one-out audit). :class:`ReferenceStats` never
copies the whole subset: attacks read it a block of examples at a time, as float64
``[R, B, A]``, so scoring 256 references of a 60,000-example pool with 18 views needs
memory for one block, not for ``R x N x A`` float64 numbers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from mia_bench import signals

RMIA_TEMPERATURE = 2.0  # the RMIA paper's configs and LeakPro
RECORDED = ("scaled_logit", "log_p", "log_p_t2")  # what the recorder stores per epoch
BLOCK_ELEMENTS = 1 << 22  # R x B x A numbers per block: 32 MB as float64
_TEMPERED = re.compile(r"^log_p_t(\d+(?:\.\d+)?)$")


def log_p_name(temperature: float = 1.0) -> str:
    """The statistic ``log p_y`` at a softmax temperature.

    >>> log_p_name(), log_p_name(2.0), log_p_name(0.5)
    ('log_p', 'log_p_t2', 'log_p_t0.5')
    """
    if not temperature > 0:
        raise ValueError(f"a softmax temperature must be > 0, got {temperature}")
    return "log_p" if temperature == 1 else f"log_p_t{temperature:g}"


def statistic(name: str, logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """One statistic of ``logits [..., C]`` with ``labels`` broadcast to ``[...]``; float64.

    Raises:
        ValueError: for an unknown name.

    >>> z = np.log([[1.0, 3.0]])  # p = (1/4, 3/4), label 1
    >>> [statistic(n, z, np.array([1])).round(4).tolist() for n in ("scaled_logit", "log_p")]
    [[1.0986], [-0.2877]]
    >>> statistic("log_p_t2", z, np.array([1])).round(4).tolist()  # log(sqrt 3 / (1 + sqrt 3))
    [-0.4557]
    """
    if name == "scaled_logit":
        return signals.scaled_logit(logits, labels)
    if name == "log_p":
        return -signals.loss(logits, labels)
    tempered = _TEMPERED.match(name)
    if tempered:
        return -signals.loss(np.asarray(logits, dtype=np.float64) / float(tempered[1]), labels)
    raise ValueError(
        f"unknown statistic {name!r}: use scaled_logit, log_p or log_p_t<T> (e.g. log_p_t2)"
    )


def compute_statistics(
    logits: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str] = RECORDED,
    axis: int = 0,
    dtype: type = np.float32,
) -> dict[str, np.ndarray]:
    """The named statistics of logits ``[N, A, C]`` (or ``[R, N, A, C]`` with ``axis=1``).

    Args:
        logits: ``[..., N, A, C]``.
        labels: ``int[N]``, laid along ``axis`` of the leading shape.
        names: which statistics.
        axis: the example axis of the leading shape.
        dtype: the stored type (float32 on disk; float64 keeps them exact).

    Returns:
        name -> ``dtype[..., N, A]``.
    """
    expanded = signals.expand_labels(labels, logits, axis=axis)
    return {name: statistic(name, logits, expanded).astype(dtype) for name in names}


class ReferenceStats:
    """Statistics ``[R, N, A]`` of R references: rows ``rows`` of ``[M, N, A]`` arrays.

    Args:
        arrays: statistic name -> ``[M, N, A]`` array (a numpy memmap, or in memory).
        rows: which of the M rows are the references (default: all), in order.

    >>> stats = ReferenceStats({"log_p": np.arange(12.0).reshape(3, 2, 2)}, rows=[2, 0])
    >>> stats.shape, stats.view("log_p", 1).tolist()
    ((2, 2, 2), [[9.0, 11.0], [1.0, 3.0]])
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], rows: Sequence[int] | None = None):
        shapes = {a.shape for a in arrays.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 3:
            raise ValueError(
                f"reference statistics must be [M, N, A] arrays of one shape, got "
                f"{ {name: a.shape for name, a in arrays.items()} }"
            )
        self.arrays = dict(arrays)
        m, self.num_examples, self.num_views = next(iter(shapes))
        self.rows = np.arange(m) if rows is None else np.asarray(rows, dtype=np.int64)
        if self.rows.size and (self.rows.min() < 0 or self.rows.max() >= m):
            raise ValueError(f"reference rows must lie in [0, {m}), got {self.rows.tolist()}")
        self._all = np.array_equal(self.rows, np.arange(m))

    @classmethod
    def from_logits(
        cls, ref_logits: np.ndarray, labels: np.ndarray, names: Sequence[str]
    ) -> ReferenceStats:
        """Statistics of in-memory logits ``[R, N, A, C]``, kept in float64 (exact)."""
        return cls(compute_statistics(ref_logits, labels, names, axis=1, dtype=np.float64))

    @property
    def num_references(self) -> int:
        """R."""
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(R, N, A)``."""
        return (self.num_references, self.num_examples, self.num_views)

    def subset(self, picked: Sequence[int] | np.ndarray) -> ReferenceStats:
        """The references ``picked`` (positions among these R), sharing the arrays."""
        return ReferenceStats(self.arrays, self.rows[np.asarray(picked, dtype=np.int64)])

    def read(self, name: str, start: int, stop: int) -> np.ndarray:
        """Examples ``start:stop`` of statistic ``name``, float64 ``[R, stop - start, A]``."""
        block = self._array(name)[:, start:stop]  # [M, B, A], a view of the memmap
        block = block if self._all else block[self.rows]  # [R, B, A]
        return np.asarray(block, dtype=np.float64)

    def row(self, name: str, position: int) -> np.ndarray:
        """Reference ``position``'s statistic ``name``, float64 ``[N, A]``."""
        return np.asarray(self._array(name)[self.rows[position]], dtype=np.float64)

    def _array(self, name: str) -> np.ndarray:
        if name not in self.arrays:
            raise ValueError(
                f"the references carry statistics {sorted(self.arrays)}, not {name!r}: "
                "declare it in the attack's Attack(statistics=...) so the harness loads it"
            )
        return self.arrays[name]

    def block_size(self) -> int:
        """Examples per block: about ``BLOCK_ELEMENTS`` numbers, at least one example."""
        return max(1, BLOCK_ELEMENTS // max(1, self.num_references * self.num_views))

    def blocks(self, name: str) -> Iterator[tuple[slice, np.ndarray]]:
        """``(examples, float64 [R, B, A])`` blocks covering the pool in order."""
        step = self.block_size()
        for start in range(0, self.num_examples, step):
            stop = min(start + step, self.num_examples)
            yield slice(start, stop), self.read(name, start, stop)

    def view(self, name: str, view: int = 0) -> np.ndarray:
        """One query view of statistic ``name`` for every example, float64 ``[R, N]``."""
        out = np.empty((self.num_references, self.num_examples))
        for examples, block in self.blocks(name):
            out[:, examples] = block[:, :, view]
        return out
