"""Confidence intervals of an attack's numbers on one target.

* :func:`clopper_pearson`: the exact binomial interval (Clopper and Pearson 1934) of a
  proportion, e.g. the TPR (true positives of the members) or the achieved FPR (false
  positives of the non-members) at one threshold. It never undercovers.
* :func:`tpr_at_fpr_interval`: the threshold :func:`~mia_bench.metrics.tpr_at_fpr`
  picks, with exact intervals of the TPR and of the FPR it achieves there.
* :func:`bootstrap_interval`: a percentile interval of any score metric (AUC, TPR at a
  fixed FPR) over examples resampled with replacement, members and non-members
  separately (their counts fixed, as the keep row fixes them).

The spread across targets (leave-one-out audits) is the other, complementary interval:
it sees the training randomness, these see the finite pool.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mia_bench.metrics import tpr_at_fpr

DEFAULT_CONFIDENCE = 0.95


def clopper_pearson(
    successes: np.ndarray | int, trials: np.ndarray | int, confidence: float = DEFAULT_CONFIDENCE
) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided exact interval of ``successes / trials`` (arrays broadcast).

    The lower end is the ``alpha/2`` quantile of Beta(k, n - k + 1) (0 when k = 0), the
    upper the ``1 - alpha/2`` quantile of Beta(k + 1, n - k) (1 when k = n).

    >>> lo, hi = clopper_pearson(0, 10)
    >>> float(lo), round(float(hi), 4)  # 1 - 0.025 ** (1 / 10)
    (0.0, 0.3085)
    >>> [round(float(x), 4) for x in clopper_pearson(5, 10)]
    [0.1871, 0.8129]
    """
    from scipy.stats import beta

    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    if np.any(k < 0) or np.any(k > n) or np.any(n <= 0):
        raise ValueError("clopper_pearson needs 0 <= successes <= trials and trials > 0")
    alpha = 1.0 - confidence
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(k == 0, 0.0, beta.ppf(alpha / 2, k, n - k + 1))
        hi = np.where(k == n, 1.0, beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


@dataclass(frozen=True)
class RateInterval:
    """TPR and achieved FPR at one threshold, with their exact intervals."""

    tpr: float
    tpr_low: float
    tpr_high: float
    fpr: float
    fpr_low: float
    fpr_high: float
    num_positives: int
    num_negatives: int


def tpr_at_fpr_interval(
    scores: np.ndarray,
    membership: np.ndarray,
    max_fpr: float,
    confidence: float = DEFAULT_CONFIDENCE,
) -> RateInterval:
    """TPR at the threshold :func:`~mia_bench.metrics.tpr_at_fpr` picks (the largest TPR
    whose FPR <= ``max_fpr``), with Clopper-Pearson intervals of it and of the FPR."""
    point = tpr_at_fpr(scores, membership, max_fpr)  # the metrics' one rule
    membership = np.asarray(membership, dtype=bool)
    positives, negatives = int(membership.sum()), int((~membership).sum())
    tp, fp = round(point.tpr * positives), round(point.fpr * negatives)
    tpr_lo, tpr_hi = clopper_pearson(tp, positives, confidence)
    fpr_lo, fpr_hi = clopper_pearson(fp, negatives, confidence)
    return RateInterval(point.tpr, float(tpr_lo), float(tpr_hi), point.fpr,
                        float(fpr_lo), float(fpr_hi), positives, negatives)  # fmt: skip


def bootstrap_interval(
    scores: np.ndarray,
    membership: np.ndarray,
    statistic: Callable[[np.ndarray, np.ndarray], float],
    resamples: int = 1000,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of ``statistic(scores, membership)`` over stratified resamples.

    >>> rng = np.random.default_rng(0)
    >>> m = np.arange(200) < 100
    >>> s = rng.normal(size=200) + m
    >>> from mia_bench.metrics import auc
    >>> lo, hi = bootstrap_interval(s, m, auc, resamples=200)
    >>> lo < auc(s, m) < hi
    True
    """
    scores = np.asarray(scores, dtype=np.float64)
    membership = np.asarray(membership, dtype=bool)
    members, others = np.flatnonzero(membership), np.flatnonzero(~membership)
    rng = np.random.default_rng(seed)
    values = np.empty(resamples)
    for b in range(resamples):
        picked = np.concatenate(
            [rng.choice(members, len(members)), rng.choice(others, len(others))]
        )
        values[b] = statistic(scores[picked], membership[picked])
    alpha = 1.0 - confidence
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)
