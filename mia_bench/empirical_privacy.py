"""An empirical lower bound on epsilon from one attack's ROC on one target.

An (epsilon, delta)-DP training algorithm bounds every membership test: for any
threshold, ``TPR <= e^eps * FPR + delta`` and ``1 - FPR <= e^eps * (1 - TPR) + delta``
(the hypothesis-testing view of DP used by Kairouz et al. 2015, and for auditing by
Jagielski et al. 2020 and Nasr et al. 2021). So each ROC point certifies

    eps >= log((TPR - delta) / FPR)   and   eps >= log((1 - FPR - delta) / (1 - TPR)).

The rates are estimated from a finite pool, so :func:`epsilon_lower_bound` uses the
Clopper-Pearson lower bound of the TPR and the upper bound of the FPR
(:func:`~mia_bench.intervals.clopper_pearson`) at every threshold, and reports the
largest epsilon they certify (0 when none does).

What it can and cannot say:

* It is a **lower bound for the training algorithm**, valid with the stated confidence
  per threshold; it never proves a model private, and a weak attack gives a loose bound.
* The threshold is picked on the same examples that estimate the rates, so the maximum
  over thresholds is slightly optimistic; the intervals at each threshold are exact.
  Choose the threshold on other targets (or half the pool) for a strict audit.
* The examples of one model are not the independent "canaries" of a DP audit: members
  were trained on together, so their scores are dependent through the model. One model
  audited on its pool is the "black-box, natural data" setting of Nasr et al. 2021,
  whose bounds are far below the accountant's epsilon.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mia_bench.intervals import DEFAULT_CONFIDENCE, clopper_pearson
from mia_bench.metrics import roc_curve


@dataclass(frozen=True)
class EpsilonBound:
    """The largest epsilon one attack's ROC certifies, and the point that certifies it."""

    epsilon: float
    delta: float
    confidence: float
    tpr_low: float  # Clopper-Pearson lower bound of the TPR at that threshold
    fpr_high: float  # upper bound of the FPR there
    threshold: float


def epsilon_from_rates(tpr_low: np.ndarray, fpr_high: np.ndarray, delta: float) -> np.ndarray:
    """The epsilon each (TPR lower bound, FPR upper bound) pair certifies, 0 where none.

    >>> round(float(epsilon_from_rates(np.array(0.5), np.array(0.05), 0.0)), 4)  # log 10
    2.3026
    >>> float(epsilon_from_rates(np.array(0.1), np.array(0.2), 0.0))
    0.0
    """
    tpr_low = np.asarray(tpr_low, dtype=np.float64)
    fpr_high = np.asarray(fpr_high, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        upper = np.where(
            (tpr_low - delta > 0) & (fpr_high > 0), np.log((tpr_low - delta) / fpr_high), 0.0
        )
        lower = np.where(
            (1 - fpr_high - delta > 0) & (1 - tpr_low > 0),
            np.log((1 - fpr_high - delta) / (1 - tpr_low)),
            0.0,
        )
    return np.maximum(np.maximum(upper, lower), 0.0)


def epsilon_lower_bound(
    scores: np.ndarray,
    membership: np.ndarray,
    delta: float,
    confidence: float = DEFAULT_CONFIDENCE,
) -> EpsilonBound:
    """The largest epsilon the attack's thresholds certify at ``delta`` (module docstring).

    >>> m = np.arange(200) < 100  # a perfect attack on 100 members, 100 non-members
    >>> bound = epsilon_lower_bound(m.astype(float), m, delta=0.0)
    >>> round(bound.epsilon, 3)  # log((0.025 ** 0.01) / (1 - 0.025 ** 0.01))
    3.281
    """
    fpr, tpr, thresholds = roc_curve(scores, membership)
    membership = np.asarray(membership, dtype=bool)
    positives, negatives = int(membership.sum()), int((~membership).sum())
    tp = np.rint(tpr * positives)
    fp = np.rint(fpr * negatives)
    tpr_low = clopper_pearson(tp, positives, confidence)[0]
    fpr_high = clopper_pearson(fp, negatives, confidence)[1]
    eps = epsilon_from_rates(tpr_low, fpr_high, delta)
    best = int(np.argmax(eps))
    return EpsilonBound(float(eps[best]), delta, confidence, float(tpr_low[best]),
                        float(fpr_high[best]), float(thresholds[best]))  # fmt: skip
