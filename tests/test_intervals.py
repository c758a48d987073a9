"""Exact and bootstrap intervals, and the empirical epsilon bound, against scipy and hand
computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from mia_bench.empirical_privacy import epsilon_from_rates, epsilon_lower_bound
from mia_bench.intervals import bootstrap_interval, clopper_pearson, tpr_at_fpr_interval
from mia_bench.metrics import auc, tpr_at_fpr


@pytest.mark.parametrize("k,n", [(0, 7), (1, 50), (13, 40), (40, 40), (3, 1000)])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_clopper_pearson_is_scipys_exact_interval(k, n, confidence):
    expected = binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    lo, hi = clopper_pearson(k, n, confidence)
    assert float(lo) == pytest.approx(expected.low, abs=1e-12)
    assert float(hi) == pytest.approx(expected.high, abs=1e-12)


def test_clopper_pearson_by_hand_and_bad_counts():
    lo, hi = clopper_pearson(np.array([0, 10]), np.array([10, 10]))
    assert hi[0] == pytest.approx(1 - 0.025 ** (1 / 10)) and lo[1] == pytest.approx(0.025**0.1)
    with pytest.raises(ValueError, match="0 <= successes <= trials"):
        clopper_pearson(5, 4)


def test_tpr_interval_uses_the_metrics_threshold_and_counts():
    rng = np.random.default_rng(1)
    membership = np.arange(1000) < 400
    scores = rng.normal(size=1000) + 1.5 * membership
    got = tpr_at_fpr_interval(scores, membership, 0.01)
    point = tpr_at_fpr(scores, membership, 0.01)
    assert (got.tpr, got.fpr) == (point.tpr, point.fpr)
    k, n = round(point.tpr * 400), 400
    ci = binomtest(k, n).proportion_ci(method="exact")
    assert (got.tpr_low, got.tpr_high) == pytest.approx((ci.low, ci.high))
    assert got.fpr_low <= got.fpr <= 0.01 <= got.fpr_high and got.num_negatives == 600


def test_bootstrap_interval_covers_the_auc_and_is_seeded():
    rng = np.random.default_rng(2)
    membership = rng.random(400) < 0.5
    scores = rng.normal(size=400) + membership
    lo, hi = bootstrap_interval(scores, membership, auc, resamples=300, seed=3)
    assert lo < auc(scores, membership) < hi and hi - lo < 0.2
    assert (lo, hi) == bootstrap_interval(scores, membership, auc, resamples=300, seed=3)


def test_epsilon_of_a_perfect_attack_by_hand():
    membership = np.arange(200) < 100
    bound = epsilon_lower_bound(membership.astype(float), membership, delta=1e-5)
    t = 0.025 ** (1 / 100)  # the CP lower bound of 100/100, and 1 - the upper of 0/100
    assert bound.epsilon == pytest.approx(math.log((t - 1e-5) / (1 - t)))
    assert (bound.tpr_low, bound.fpr_high) == pytest.approx((t, 1 - t))


def test_epsilon_of_rates_both_forms_and_none():
    assert float(epsilon_from_rates(np.array(0.6), np.array(0.1), 0.0)) == pytest.approx(
        math.log(6)
    )
    # the second form: (1 - FPR - delta) / (1 - TPR)
    assert float(epsilon_from_rates(np.array(0.9), np.array(0.5), 0.0)) == pytest.approx(
        math.log(0.5 / 0.1)
    )
    assert float(epsilon_from_rates(np.array(0.3), np.array(0.3), 0.0)) == 0.0


def test_a_random_attack_certifies_little():
    rng = np.random.default_rng(4)
    membership = rng.random(2000) < 0.5
    bound = epsilon_lower_bound(rng.normal(size=2000), membership, delta=1e-5)
    assert bound.epsilon < 0.3
