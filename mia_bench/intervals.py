"""Confidence intervals of an attack's numbers on one target.

* :func:`clopper_pearson`: the exact binomial interval (Clopper and Pearson 1934) of a
  proportion, e.g. the TPR (true positives of the members) or the achieved FPR (false
  positives of the non-members) at one threshold. It never undercovers.
* :func:`tpr_at_fpr_interval`: the threshold :func:`~mia_bench.metrics.tpr_at_fpr`
  picks, with exact intervals of the TPR and of the FPR it achieves there.
* :func:`bootstrap_interval`: a percentile interval of any score metric (AUC, TPR at a
  fixed FPR) over examples resampled with replacement, members and non-members
  separately (their counts fixed, as the keep row fixes them).
* :func:`bootstrap_metrics`: the same resampling for AUC and TPR at each FPR, from one
  sort of the scores (a resample only reweights the sorted examples), O(N) per resample.
* :func:`interval_metrics`: every interval an audit reports for one attack on one target,
  as flat measures beside :func:`~mia_bench.metrics.summarize`'s.

The spread across targets (leave-one-out audits) is the other, complementary interval:
it sees the training randomness, these see the finite pool.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from mia_bench.metrics import _auc, _tpr_at_fpr, tpr_at_fpr

DEFAULT_CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 200  # bootstrap resamples of an audit (AUC's interval: +-0.002 at 60k)


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
        picked = _stratified(rng, members, others)
        values[b] = statistic(scores[picked], membership[picked])
    alpha = 1.0 - confidence
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _stratified(rng: np.random.Generator, members: np.ndarray, others: np.ndarray) -> np.ndarray:
    """One resample: as many members and non-members as there are, drawn with replacement."""
    return np.concatenate([rng.choice(members, len(members)), rng.choice(others, len(others))])


def _tie_groups(scores: np.ndarray) -> tuple[np.ndarray, int]:
    """Per example, the rank of its distinct score from the highest (0), and how many."""
    distinct, inverse = np.unique(-scores, return_inverse=True)
    return inverse, len(distinct)


def resampled_metrics(
    scores: np.ndarray, membership: np.ndarray, picks: np.ndarray, fprs: Sequence[float]
) -> dict[str, float]:
    """AUC and TPR at each FPR of the resample ``scores[picks]`` without sorting it again.

    Equals :func:`~mia_bench.metrics.summarize` on ``scores[picks], membership[picks]``
    (tested): the resample's ROC is the pool's, each distinct score weighted by how often
    its examples were picked.
    """
    scores = np.asarray(scores, dtype=np.float64)
    membership = np.asarray(membership, dtype=bool)
    groups, size = _tie_groups(scores)
    return _weighted(groups, size, membership, picks, tuple(fprs))


def _weighted(
    groups: np.ndarray, size: int, membership: np.ndarray, picks: np.ndarray, fprs: tuple
) -> dict[str, float]:
    picked = membership[picks]
    tps = np.r_[0, np.cumsum(np.bincount(groups[picks[picked]], minlength=size))]
    fps = np.r_[0, np.cumsum(np.bincount(groups[picks[~picked]], minlength=size))]
    fpr, tpr = fps / fps[-1], tps / tps[-1]
    out = {"auc": _auc(fpr, tpr)}
    for x in fprs:
        out[f"tpr_at_fpr_{x:g}"] = _tpr_at_fpr(fpr, tpr, x, int(fps[-1])).tpr
    return out


def bootstrap_metrics(
    scores: np.ndarray,
    membership: np.ndarray,
    fprs: Sequence[float],
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile intervals of ``auc`` and ``tpr_at_fpr_<x>`` over stratified resamples
    (members and non-members resampled separately, as :func:`bootstrap_interval`)."""
    scores = np.asarray(scores, dtype=np.float64)
    membership = np.asarray(membership, dtype=bool)
    groups, size = _tie_groups(scores)
    members, others = np.flatnonzero(membership), np.flatnonzero(~membership)
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {}
    for _ in range(resamples):
        picks = _stratified(rng, members, others)
        for key, value in _weighted(groups, size, membership, picks, tuple(fprs)).items():
            samples.setdefault(key, []).append(value)
    alpha = 1.0 - confidence
    return {
        key: tuple(float(q) for q in np.quantile(values, [alpha / 2, 1 - alpha / 2]))
        for key, values in samples.items()
    }


def interval_metrics(
    scores: np.ndarray,
    membership: np.ndarray,
    fprs: Sequence[float],
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> dict[str, float]:
    """The intervals of one attack on one target, as flat measures:

    * ``tpr_at_fpr_<x>_low`` / ``_high``: exact Clopper-Pearson interval of the TPR at the
      threshold the metric picks, and ``fpr_at_fpr_<x>_high`` the upper bound of the FPR
      achieved there (always);
    * ``auc_low`` / ``auc_high`` and ``tpr_at_fpr_<x>_boot_low`` / ``_boot_high``: the
      bootstrap's percentile intervals (only with ``resamples`` > 0).

    >>> m = np.arange(200) < 100
    >>> d = interval_metrics(m.astype(float), m, [0.01], resamples=0)
    >>> round(d["tpr_at_fpr_0.01_low"], 4), d["tpr_at_fpr_0.01_high"]  # 100 of 100 found
    (0.9638, 1.0)
    """
    out: dict[str, float] = {}
    for x in fprs:
        rate = tpr_at_fpr_interval(scores, membership, x, confidence)
        out[f"tpr_at_fpr_{x:g}_low"], out[f"tpr_at_fpr_{x:g}_high"] = rate.tpr_low, rate.tpr_high
        out[f"fpr_at_fpr_{x:g}_high"] = rate.fpr_high
    if resamples > 0:
        boot = bootstrap_metrics(scores, membership, fprs, resamples, confidence, seed)
        out["auc_low"], out["auc_high"] = boot["auc"]
        for x in fprs:
            key = f"tpr_at_fpr_{x:g}"
            out[f"{key}_boot_low"], out[f"{key}_boot_high"] = boot[key]
    return out
