"""The only place attack scores become numbers: ROC, AUC, TPR at low FPR, accuracy.

Sign convention: a higher score means "more likely a member", and an example is
predicted a member when ``score >= threshold``. ``membership`` is the truth, a bool
array (True = member); integer 0/1 arrays are accepted too. Everything is float64 and
written in numpy; the ROC equals ``sklearn.metrics.roc_curve(membership, scores,
drop_intermediate=False)``, ties included (tests check it). No sigmoid is ever applied
to the scores, so any real-valued score works.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_FPRS = (0.001, 0.01)  # the FPRs of the TPR metrics unless --fprs says otherwise


@dataclass(frozen=True)
class TprAtFpr:
    """The best true-positive rate among thresholds whose false-positive rate is low.

    Attributes:
        tpr: the largest TPR over ROC points with ``fpr <= max_fpr``.
        fpr: the lowest FPR at which that TPR is reached (``<= max_fpr``).
        max_fpr: the FPR budget that was asked for.
        num_negatives: the number of non-members. When ``1 / num_negatives > max_fpr``
            the budget cannot be resolved: only FPR = 0 is admissible (see ``resolved``).
    """

    tpr: float
    fpr: float
    max_fpr: float
    num_negatives: int

    @property
    def resolved(self) -> bool:
        """Whether one false positive fits in the budget (``num_negatives * max_fpr >= 1``)."""
        return self.num_negatives * self.max_fpr >= 1.0


def roc_curve(
    scores: np.ndarray, membership: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve, one point per distinct score, starting at (0, 0).

    Args:
        scores: ``float[N]``, finite, higher = more likely member.
        membership: ``bool[N]``, True for members; at least one of each.

    Returns:
        ``(fpr, tpr, thresholds)``, each float64 ``[K + 1]`` for K distinct scores:
        point k predicts "member" for ``score >= thresholds[k]``. Thresholds decrease;
        the first is ``+inf`` (nothing predicted member), as in sklearn >= 1.3.

    >>> fpr, tpr, thr = roc_curve(np.array([0.9, 0.8, 0.8, 0.1]),
    ...                           np.array([True, True, False, False]))
    >>> fpr.tolist(), tpr.tolist(), thr.tolist()
    ([0.0, 0.0, 0.5, 1.0], [0.0, 0.5, 1.0, 1.0], [inf, 0.9, 0.8, 0.1])
    """
    fpr, tpr, thresholds, _ = _roc(scores, membership)
    return fpr, tpr, thresholds


def auc(scores: np.ndarray, membership: np.ndarray) -> float:
    """Area under the ROC curve by the trapezoid rule (ties count one half).

    Args:
        scores: ``float[N]``, higher = more likely member.
        membership: ``bool[N]``, True for members.

    Returns:
        The AUC in [0, 1]; equals ``sklearn.metrics.roc_auc_score(membership, scores)``.

    >>> auc(np.array([0.9, 0.8, 0.8, 0.1]), np.array([True, True, False, False]))
    0.875
    """
    fpr, tpr, _ = roc_curve(scores, membership)
    return _auc(fpr, tpr)


def tpr_at_fpr(scores: np.ndarray, membership: np.ndarray, max_fpr: float) -> TprAtFpr:
    """Largest TPR over thresholds whose FPR is at most ``max_fpr``.

    This is the rule of LiRA's and Privacy Meter's evaluation code. With too few
    non-members to resolve ``max_fpr`` only the FPR = 0 points are admissible; the
    result still carries ``num_negatives`` so callers can tell.

    Args:
        scores: ``float[N]``, higher = more likely member.
        membership: ``bool[N]``, True for members.
        max_fpr: the FPR budget, in [0, 1].

    Returns:
        A :class:`TprAtFpr`.

    >>> r = tpr_at_fpr(np.array([0.9, 0.8, 0.8, 0.1]), np.array([True, True, False, False]), 0.4)
    >>> r.tpr, r.fpr, r.num_negatives, r.resolved
    (0.5, 0.0, 2, False)
    """
    fpr, tpr, _, (_, nonmembers) = _roc(scores, membership)
    return _tpr_at_fpr(fpr, tpr, max_fpr, nonmembers)


def balanced_accuracy(scores: np.ndarray, membership: np.ndarray) -> float:
    """Best attack accuracy over thresholds on a balanced view, ``max (tpr + 1 - fpr) / 2``.

    This is the "accuracy" LiRA reports; it is at least 0.5 (the endpoints of the ROC).

    >>> balanced_accuracy(np.array([0.9, 0.8, 0.8, 0.1]), np.array([True, True, False, False]))
    0.75
    """
    fpr, tpr, _ = roc_curve(scores, membership)
    return _balanced_accuracy(fpr, tpr)


def precision_at_k(scores: np.ndarray, membership: np.ndarray, k: int) -> float:
    """Fraction of members among the ``k`` highest scores.

    How vulnerability-based attacks (GMIA, Long et al.) are judged: they make few
    predictions, and each should be right. When the k-th highest score is tied, the
    tied examples share the remaining slots evenly (the expected precision when ties
    are broken at random), so the value never depends on the order of the input.

    Args:
        scores: ``float[N]``, higher = more likely member.
        membership: ``bool[N]``, True for members.
        k: how many predictions, in ``[1, N]``.

    >>> m = np.array([True, False, True, False])
    >>> precision_at_k(np.array([0.9, 0.8, 0.7, 0.1]), m, 2)
    0.5
    >>> precision_at_k(np.array([0.9, 0.5, 0.5, 0.1]), m, 2)  # 1 + half of the tie
    0.75
    """
    s, m = _validate(scores, membership)
    if not 1 <= k <= s.size:
        raise ValueError(f"k must lie in [1, {s.size}] (the number of scores), got {k}")
    kth = np.partition(s, s.size - k)[s.size - k]  # the k-th highest score
    above, tied = s > kth, s == kth
    slots = k - np.count_nonzero(above)  # filled from the tie at the k-th score
    hits = np.count_nonzero(m[above]) + slots * np.count_nonzero(m[tied]) / np.count_nonzero(tied)
    return float(hits / k)


def summarize(
    scores: np.ndarray, membership: np.ndarray, fprs: Sequence[float] = DEFAULT_FPRS
) -> dict[str, float]:
    """All metrics of one attack as a flat dict of MLflow-safe names to floats.

    Keys: ``auc``, ``balanced_acc``, then for each ``x`` in ``fprs``
    ``tpr_at_fpr_<x>`` and ``fpr_at_fpr_<x>`` (the FPR achieved), and ``num_members``,
    ``num_nonmembers``. ``<x>`` is ``format(x, "g")``: ``0.001``, ``0.01``, ``1e-05``.

    >>> d = summarize(np.array([0.9, 0.8, 0.8, 0.1]), np.array([True, True, False, False]))
    >>> list(d)  # doctest: +NORMALIZE_WHITESPACE
    ['auc', 'balanced_acc', 'tpr_at_fpr_0.001', 'fpr_at_fpr_0.001', 'tpr_at_fpr_0.01',
     'fpr_at_fpr_0.01', 'num_members', 'num_nonmembers']
    >>> d["auc"], d["tpr_at_fpr_0.01"], d["num_members"]
    (0.875, 0.5, 2.0)
    """
    fpr, tpr, _, (members, nonmembers) = _roc(scores, membership)
    out = {"auc": _auc(fpr, tpr), "balanced_acc": _balanced_accuracy(fpr, tpr)}
    for x in fprs:
        r = _tpr_at_fpr(fpr, tpr, x, nonmembers)
        out[f"tpr_at_fpr_{x:g}"], out[f"fpr_at_fpr_{x:g}"] = r.tpr, r.fpr
    out["num_members"], out["num_nonmembers"] = float(members), float(nonmembers)
    return out


def _roc(
    scores: np.ndarray, membership: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """Validate, then ``(fpr, tpr, thresholds, (num_members, num_nonmembers))``."""
    scores, membership = _validate(scores, membership)
    order = np.argsort(scores, kind="stable")[::-1]  # [N], descending score
    s, m = scores[order], membership[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # [K], end of each tie run
    tps = np.r_[0, np.cumsum(m)[last_of_tie]]  # [K + 1]
    fps = np.r_[0, last_of_tie + 1 - tps[1:]]  # [K + 1]
    thresholds = np.r_[np.inf, s[last_of_tie]]  # [K + 1]
    return fps / fps[-1], tps / tps[-1], thresholds, (int(tps[-1]), int(fps[-1]))


def _auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Trapezoid area under points sorted by increasing fpr."""
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)


def _balanced_accuracy(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Best ``(tpr + 1 - fpr) / 2`` over the ROC points."""
    return float(np.max(tpr + 1.0 - fpr) / 2.0)


def _tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, max_fpr: float, num_negatives: int) -> TprAtFpr:
    """Best TPR with ``fpr <= max_fpr``, at the lowest FPR that reaches it.

    tpr never decreases along the curve, so the best is at the last admissible point;
    among points with that same TPR the first has the lowest FPR.
    """
    if not 0.0 <= max_fpr <= 1.0:
        raise ValueError(f"max_fpr must lie in [0, 1], got {max_fpr}")
    last = np.flatnonzero(fpr <= max_fpr)[-1]  # fpr[0] = 0, so never empty
    k = int(np.argmax(tpr == tpr[last]))
    return TprAtFpr(float(tpr[k]), float(fpr[k]), float(max_fpr), num_negatives)


def _validate(scores: np.ndarray, membership: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(float64[N], bool[N])`` or raise a ValueError naming the problem."""
    s, m = np.asarray(scores), np.asarray(membership)
    if s.ndim != 1 or m.ndim != 1 or s.shape != m.shape:
        raise ValueError(
            f"scores and membership must be 1-D of the same length, got shapes {s.shape} "
            f"and {m.shape}"
        )
    if not (np.issubdtype(s.dtype, np.floating) or np.issubdtype(s.dtype, np.integer)):
        raise ValueError(f"scores must be real numbers, got dtype {s.dtype}")
    if m.dtype != bool:
        if not np.issubdtype(m.dtype, np.integer) or not np.isin(m, (0, 1)).all():
            raise ValueError(f"membership must be bool (or 0/1 integers), got dtype {m.dtype}")
        m = m.astype(bool)
    if not np.isfinite(s).all():
        raise ValueError(f"scores contain {np.count_nonzero(~np.isfinite(s))} NaN or inf values")
    if m.all() or not m.any():
        raise ValueError(
            f"membership needs at least one member and one non-member, got "
            f"{np.count_nonzero(m)} members out of {m.size}"
        )
    return s.astype(np.float64), m
