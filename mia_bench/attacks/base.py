"""The one input type of every attack, and the ``Attack`` record the registry holds.

An attack is a pure function ``AttackInputs -> float64[N]`` with one sign convention:
a higher score means "more likely a member". The target's membership truth is never
part of the inputs; only :mod:`mia_bench.metrics` sees it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from mia_bench.signals import log_softmax
from mia_bench.statistics import ReferenceStats, statistic


@dataclass(frozen=True, eq=False)
class AttackInputs:
    """What an attacker sees of one target at one epoch (plus optional references).

    Attributes:
        logits: the target's logits ``[N, A, C]`` on the pool, for A query views
            (view 0 = the plain example, then mirror, shifts...). Stored as float64.
        labels: ``int[N]`` true labels, in ``[0, C)``. Stored as int64.
        embeddings: layer name -> ``[N, D]`` features of the target (read-only mapping).
        ref_logits: reference models' logits ``[R, N, A, C]`` on the same pool and
            views, or None (attacks reading full prediction vectors need them; the
            others read ``ref_stats``). Kept in their floating type (float32 from the
            store: no R-fold float64 copy); every use converts to float64, exactly.
        ref_keep: ``bool[R, N]``, True where reference r trained on example n; given
            exactly when there are references (``ref_logits`` or ``ref_stats``).
        ref_embeddings: layer name -> ``[R, N, D]`` features of the references (needs
            ``ref_keep``; the layers are a subset of ``embeddings``).
        population: ``bool[N]`` pool examples the attacker may use as population
            samples (RMIA's z); None when the harness supplies none. Attacks must never
            compare an example with itself.
        stats: statistic name -> the target's ``[N, A]`` sufficient statistics
            (:mod:`mia_bench.statistics`) as recorded; any other is derived from ``logits``.
        ref_stats: the references' statistics ``[R, N, A]``, read in blocks; None derives
            them from ``ref_logits`` (exactly, in float64).

    Raises:
        ValueError: on any shape, dtype or range mismatch, naming it.

    >>> x = AttackInputs(np.zeros((4, 2, 3), dtype=np.float32), np.array([0, 1, 2, 0]))
    >>> x.logits.dtype, x.num_examples, x.num_references
    (dtype('float64'), 4, 0)
    """

    logits: np.ndarray
    labels: np.ndarray
    embeddings: Mapping[str, np.ndarray] = field(default_factory=dict)
    ref_logits: np.ndarray | None = None
    ref_keep: np.ndarray | None = None
    ref_embeddings: Mapping[str, np.ndarray] = field(default_factory=dict)
    population: np.ndarray | None = None
    stats: Mapping[str, np.ndarray] = field(default_factory=dict)
    ref_stats: ReferenceStats | None = None

    def plain_log_probs(self) -> np.ndarray:
        """float64 ``[N, C]`` log-softmax of the plain view, computed once for these inputs
        (the threshold attacks of an audit share it: computed at its first use)."""
        cached = self.__dict__.get("_plain_log_probs")
        if cached is None:
            cached = log_softmax(self.logits[:, 0, :])
            cached.flags.writeable = False
            object.__setattr__(self, "_plain_log_probs", cached)
        return cached

    def __post_init__(self) -> None:
        logits = _as_float64(self.logits, "logits")
        if logits.ndim != 3 or logits.shape[1] < 1 or logits.shape[2] < 2:
            raise ValueError(
                f"logits must have shape [N, A, C] (A >= 1 views, C >= 2 classes), got "
                f"{logits.shape}; add a view axis with logits[:, None] for a single view"
            )
        object.__setattr__(self, "logits", logits)
        object.__setattr__(self, "labels", _checked_labels(self.labels, logits.shape))
        object.__setattr__(self, "embeddings", _checked_embeddings(self.embeddings, len(logits)))
        self._set_references()
        self._set_ref_embeddings()
        if self.population is not None:
            population = np.asarray(self.population)
            if population.dtype != bool or population.shape != (len(logits),):
                raise ValueError(
                    f"population must be a bool[N] = bool[{len(logits)}] mask, got "
                    f"{population.dtype}{list(population.shape)}"
                )
            object.__setattr__(self, "population", population)
        self._set_stats()

    @property
    def num_examples(self) -> int:
        """N, the number of pool examples."""
        return self.logits.shape[0]

    @property
    def num_references(self) -> int:
        """R, the number of reference models (0 without references)."""
        return 0 if self.ref_keep is None else self.ref_keep.shape[0]

    @property
    def has_references(self) -> bool:
        """Whether reference models are given (their keep rows, logits or statistics)."""
        return self.ref_keep is not None

    def target_stat(self, name: str) -> np.ndarray:
        """The target's statistic ``name`` (:mod:`mia_bench.statistics`), float64 ``[N, A]``."""
        cache = self.__dict__.setdefault("_target_stats", {})
        if name not in cache:
            recorded = self.stats.get(name)
            cache[name] = (
                statistic(name, self.logits, self.labels[:, None])
                if recorded is None
                else np.asarray(recorded, dtype=np.float64)
            )
        return cache[name]

    def reference_stats(self, *names: str) -> ReferenceStats:
        """The references' statistics, given or derived from ``ref_logits`` (float64).

        Raises:
            ValueError: without references.
        """
        if self.ref_stats is not None:
            return self.ref_stats
        if self.ref_logits is None:
            raise ValueError("this attack needs reference models: pass ref_stats or ref_logits")
        cache = self.__dict__.setdefault("_ref_stats", {})
        missing = [n for n in names if n not in cache]
        if missing:
            cache |= ReferenceStats.from_logits(self.ref_logits, self.labels, missing).arrays
        return ReferenceStats({n: cache[n] for n in names})

    def _set_stats(self) -> None:
        shape = self.logits.shape[:2]
        for name, values in self.stats.items():
            if np.shape(values) != shape:
                raise ValueError(
                    f"stats[{name!r}] must have shape [N, A] = {list(shape)}, got "
                    f"{list(np.shape(values))}"
                )
        if self.ref_stats is None:
            return
        if self.ref_keep is None or self.ref_stats.shape != (self.num_references, *shape):
            raise ValueError(
                f"ref_stats must have shape [R, N, A] = [R, {shape[0]}, {shape[1]}] with one "
                f"keep row per reference in ref_keep, got {list(self.ref_stats.shape)} and "
                f"{None if self.ref_keep is None else list(self.ref_keep.shape)}"
            )

    def _set_references(self) -> None:
        has_refs = self.ref_logits is not None or self.ref_stats is not None
        if has_refs and self.ref_keep is None:
            raise ValueError(
                "references need their keep rows: pass ref_keep bool[R, N] together with "
                "ref_logits [R, N, A, C] or ref_stats"
            )
        if self.ref_keep is None:
            return
        ref_keep = np.asarray(self.ref_keep)
        if self.ref_logits is None:
            if ref_keep.dtype != bool or ref_keep.shape != (ref_keep.shape[0], len(self.logits)):
                raise ValueError(
                    f"ref_keep must be bool[R, {len(self.logits)}] (one keep row per "
                    f"reference), got {ref_keep.dtype}{list(ref_keep.shape)}"
                )
            object.__setattr__(self, "ref_keep", ref_keep)
            return
        ref_logits = _as_real(self.ref_logits, "ref_logits")
        if ref_logits.ndim != 4 or ref_logits.shape[1:] != self.logits.shape:
            raise ValueError(
                f"ref_logits must have shape [R, N, A, C] = [R, *{self.logits.shape}] to "
                f"match the target's logits, got {ref_logits.shape}"
            )
        if ref_keep.dtype != bool or ref_keep.shape != ref_logits.shape[:2]:
            raise ValueError(
                f"ref_keep must be bool{list(ref_logits.shape[:2])} (one keep row per "
                f"reference), got {ref_keep.dtype}{list(ref_keep.shape)}"
            )
        object.__setattr__(self, "ref_logits", ref_logits)
        object.__setattr__(self, "ref_keep", ref_keep)

    def _set_ref_embeddings(self) -> None:
        out = {name: np.asarray(e) for name, e in self.ref_embeddings.items()}
        for name, e in out.items():
            target = self.embeddings.get(name)
            if self.ref_keep is None or target is None:
                raise ValueError(
                    f"ref_embeddings[{name!r}] needs ref_keep and the target's "
                    f"embeddings[{name!r}] too"
                )
            if e.shape != (self.num_references, *target.shape):
                raise ValueError(
                    f"ref_embeddings[{name!r}] must have shape [R, N, D] = "
                    f"{[self.num_references, *target.shape]}, got {list(e.shape)}"
                )
        object.__setattr__(self, "ref_embeddings", MappingProxyType(out))


@dataclass(frozen=True)
class Attack:
    """A named attack in the registry.

    Attributes:
        name: registry key, also used in metric names (``mia/<name>/auc``).
        fn: the pure scoring function ``AttackInputs -> float64[N]``, higher = member.
        needs_references: whether ``fn`` reads ``ref_logits`` / ``ref_keep``.
        paper: the reference to cite.
        needs_embeddings: whether ``fn`` reads layer embeddings (of the target or the
            references), so the harness must load them.
        min_views: the fewest query views ``fn`` works with (the harness skips the
            attack on signals with fewer).
        statistics: the sufficient statistics (:mod:`mia_bench.statistics`) ``fn`` reads
            of the references, so the harness loads them (and nothing more).
        needs_ref_logits: whether ``fn`` reads the references' full logits
            ``ref_logits`` (the harness loads them only for such attacks).

    >>> a = Attack("zero", lambda x: np.zeros(x.num_examples), False, "none")
    >>> a(AttackInputs(np.zeros((3, 1, 2)), np.array([0, 1, 0]))).tolist()
    [0.0, 0.0, 0.0]
    """

    name: str
    fn: Callable[[AttackInputs], np.ndarray]
    needs_references: bool
    paper: str
    needs_embeddings: bool = False
    min_views: int = 1
    statistics: tuple[str, ...] = ()
    needs_ref_logits: bool = False

    def __call__(self, inputs: AttackInputs) -> np.ndarray:
        """Score every example of ``inputs``; returns finite ``float64[N]``.

        Raises:
            ValueError: if references are needed but absent, or ``fn`` broke its contract.
        """
        if self.needs_references and not inputs.has_references:
            raise ValueError(
                f"attack {self.name!r} needs reference models: build AttackInputs with "
                "ref_keep bool[R, N] and ref_stats (or ref_logits [R, N, A, C])"
            )
        if self.needs_ref_logits and inputs.ref_logits is None:
            raise ValueError(
                f"attack {self.name!r} reads the references' full logits: build "
                "AttackInputs with ref_logits [R, N, A, C]"
            )
        scores = self.fn(inputs)
        _check_scores(scores, inputs.num_examples, self.name)
        return scores


def _as_real(x: np.ndarray, name: str) -> np.ndarray:
    """``x`` as floating point: floats as they are, integers as float64."""
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else _as_float64(x, name)


def _as_float64(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"{name} must be real numbers, got dtype {x.dtype}")
    return x.astype(np.float64, copy=False)


def _checked_labels(labels: np.ndarray, logits_shape: tuple[int, ...]) -> np.ndarray:
    labels = np.asarray(labels)
    n, _, c = logits_shape
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be int[N] = int[{n}] to match logits {logits_shape}, got "
            f"{labels.dtype}{list(labels.shape)}"
        )
    if n and (labels.min() < 0 or labels.max() >= c):
        raise ValueError(
            f"labels must lie in [0, C) = [0, {c}), got range [{labels.min()}, {labels.max()}]"
        )
    return labels.astype(np.int64, copy=False)


def _checked_embeddings(embeddings: Mapping[str, np.ndarray], n: int) -> Mapping[str, np.ndarray]:
    out = {name: np.asarray(e) for name, e in embeddings.items()}
    for name, e in out.items():
        if e.ndim != 2 or e.shape[0] != n:
            raise ValueError(
                f"embedding {name!r} must have shape [N, D] with N = {n}, got {e.shape}"
            )
    return MappingProxyType(out)


def _check_scores(scores: np.ndarray, n: int, name: str) -> None:
    if not isinstance(scores, np.ndarray) or scores.dtype != np.float64 or scores.shape != (n,):
        raise ValueError(
            f"attack {name!r} must return a float64[{n}] numpy array, got "
            f"{type(scores).__name__} {getattr(scores, 'dtype', '')}{list(np.shape(scores))}"
        )
    if not np.isfinite(scores).all():
        raise ValueError(
            f"attack {name!r} returned {np.count_nonzero(~np.isfinite(scores))} NaN or inf "
            f"scores out of {n}"
        )
