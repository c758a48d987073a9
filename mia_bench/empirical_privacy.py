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

The threshold is picked on the same examples that estimate the rates, and the maximum
over thousands of thresholds of per-threshold 95% bounds is not a 95% bound. So the
thresholds tested are fixed in advance: for FPR budgets
``g`` on a log grid (``GRID_PER_DECADE`` per decade, from one non-member to all), the
point with the largest TPR at FPR <= g (the first form), and for the same budgets of the
false-negative rate the point with the lowest FPR at FNR <= g (the second form). With K
such thresholds every interval is taken at confidence ``1 - (1 - confidence) / K``
(Bonferroni), so the reported maximum holds at ``confidence``.

What it can and cannot say:

* It is a **lower bound for the training algorithm**, valid with the stated confidence;
  it never proves a model private, and a weak attack gives a loose bound.
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

GRID_PER_DECADE = 10  # FPR (and FNR) budgets tested per decade
DELTA = 1e-5  # the delta audits report epsilon at (DP-SGD's default, and the usual choice)


@dataclass(frozen=True)
class EpsilonBound:
    """The largest epsilon one attack's ROC certifies, and the point that certifies it."""

    epsilon: float
    delta: float
    confidence: float  # of the maximum over thresholds (simultaneous intervals)
    thresholds_tested: int  # K: each interval is at confidence 1 - (1 - confidence) / K
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
    family: float = DEFAULT_CONFIDENCE,
) -> EpsilonBound:
    """The largest epsilon the attack's thresholds certify at ``delta`` with confidence
    ``family`` over all thresholds together (module docstring).

    >>> m = np.arange(200) < 100  # a perfect attack on 100 members, 100 non-members
    >>> bound = epsilon_lower_bound(m.astype(float), m, delta=0.0)
    >>> round(bound.epsilon, 3), bound.thresholds_tested  # log(0.025**0.01 / (1 - 0.025**0.01))
    (3.281, 1)
    """
    fpr, tpr, thresholds = roc_curve(scores, membership)
    membership = np.asarray(membership, dtype=bool)
    positives, negatives = int(membership.sum()), int((~membership).sum())
    tp, fp = np.rint(tpr * positives), np.rint(fpr * negatives)  # both nondecreasing
    picked = _tested_points(tp, fp, positives, negatives)
    tested = max(int(np.count_nonzero((picked > 0) & (picked < len(tp) - 1))), 1)
    confidence = 1.0 - (1.0 - family) / tested
    tpr_low = clopper_pearson(tp[picked], positives, confidence)[0]
    fpr_high = clopper_pearson(fp[picked], negatives, confidence)[1]
    eps = epsilon_from_rates(tpr_low, fpr_high, delta)
    best = int(np.argmax(eps))
    return EpsilonBound(float(eps[best]), delta, family, tested, float(tpr_low[best]),
                        float(fpr_high[best]), float(thresholds[picked[best]]))  # fmt: skip


def _tested_points(tp: np.ndarray, fp: np.ndarray, positives: int, negatives: int) -> np.ndarray:
    """Indices of the ROC points tested (module docstring), in ROC order."""

    def budgets(n: int) -> np.ndarray:
        steps = int(np.ceil(np.log10(n) * GRID_PER_DECADE)) + 1
        return np.unique(np.r_[0, np.floor(np.geomspace(1, n, steps))])

    last_within_fp = np.searchsorted(fp, budgets(negatives), side="right") - 1
    first_form = np.searchsorted(tp, tp[last_within_fp], side="left")  # its lowest FPR
    first_within_fn = np.searchsorted(tp, positives - budgets(positives), side="left")
    second_form = np.searchsorted(fp, fp[first_within_fn], side="right") - 1  # best TPR
    return np.unique(np.r_[first_form, second_form])
