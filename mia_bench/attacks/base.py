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


@dataclass(frozen=True, eq=False)
class AttackInputs:
    """What an attacker sees of one target at one epoch (plus optional references).

    Attributes:
        logits: the target's logits ``[N, A, C]`` on the pool, for A query views
            (view 0 = the plain example, then mirror, shifts...). Stored as float64.
        labels: ``int[N]`` true labels, in ``[0, C)``. Stored as int64.
        embeddings: layer name -> ``[N, D]`` features of the target (read-only mapping).
        ref_logits: reference models' logits ``[R, N, A, C]`` on the same pool and
            views, or None. Stored as float64.
        ref_keep: ``bool[R, N]``, True where reference r trained on example n; given
            exactly when ``ref_logits`` is.
        ref_embeddings: layer name -> ``[R, N, D]`` features of the references (needs
            ``ref_logits``; the layers are a subset of ``embeddings``).
        population: ``bool[N]`` pool examples the attacker may use as population
            samples (RMIA's z); None when the harness supplies none. Attacks must never
            compare an example with itself.

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

    @property
    def num_examples(self) -> int:
        """N, the number of pool examples."""
        return self.logits.shape[0]

    @property
    def num_references(self) -> int:
        """R, the number of reference models (0 without references)."""
        return 0 if self.ref_logits is None else self.ref_logits.shape[0]

    def _set_references(self) -> None:
        if (self.ref_logits is None) != (self.ref_keep is None):
            raise ValueError(
                "ref_logits and ref_keep go together: pass both (references' logits "
                "[R, N, A, C] and their keep rows bool[R, N]) or neither"
            )
        if self.ref_logits is None:
            return
        ref_logits = _as_float64(self.ref_logits, "ref_logits")
        if ref_logits.ndim != 4 or ref_logits.shape[1:] != self.logits.shape:
            raise ValueError(
                f"ref_logits must have shape [R, N, A, C] = [R, *{self.logits.shape}] to "
                f"match the target's logits, got {ref_logits.shape}"
            )
        ref_keep = np.asarray(self.ref_keep)
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
            if self.ref_logits is None or target is None:
                raise ValueError(
                    f"ref_embeddings[{name!r}] needs ref_logits and the target's "
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

    def __call__(self, inputs: AttackInputs) -> np.ndarray:
        """Score every example of ``inputs``; returns finite ``float64[N]``.

        Raises:
            ValueError: if references are needed but absent, or ``fn`` broke its contract.
        """
        if self.needs_references and inputs.ref_logits is None:
            raise ValueError(
                f"attack {self.name!r} needs reference models: build AttackInputs with "
                "ref_logits [R, N, A, C] and ref_keep bool[R, N]"
            )
        scores = self.fn(inputs)
        _check_scores(scores, inputs.num_examples, self.name)
        return scores


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
