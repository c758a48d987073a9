"""Exact and bootstrap intervals, and the empirical epsilon bound, against scipy and hand
computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from mia_bench.empirical_privacy import epsilon_from_rates, epsilon_lower_bound
from mia_bench.intervals import (
    bootstrap_interval,
    bootstrap_metrics,
    clopper_pearson,
    resampled_metrics,
    tpr_at_fpr_interval,
)
from mia_bench.metrics import auc, roc_curve, summarize, tpr_at_fpr


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


def test_resampled_metrics_equal_summarize_on_the_materialized_resample():
    rng = np.random.default_rng(5)
    membership = rng.random(500) < 0.4
    scores = np.round(rng.normal(size=500) + membership, 1)  # many ties
    for _ in range(5):
        picks = np.concatenate([
            rng.choice(np.flatnonzero(membership), membership.sum()),
            rng.choice(np.flatnonzero(~membership), (~membership).sum()),
        ])  # fmt: skip
        fast = resampled_metrics(scores, membership, picks, [0.01, 0.1])
        slow = summarize(scores[picks], membership[picks], [0.01, 0.1])
        assert fast == pytest.approx({k: slow[k] for k in fast}, abs=1e-12)


def test_bootstrap_metrics_agree_with_the_generic_bootstrap():
    rng = np.random.default_rng(6)
    membership = rng.random(600) < 0.5
    scores = rng.normal(size=600) + 0.5 * membership
    fast = bootstrap_metrics(scores, membership, [0.1], resamples=400, seed=1)["auc"]
    slow = bootstrap_interval(scores, membership, auc, resamples=400, seed=2)
    assert fast[0] < auc(scores, membership) < fast[1]
    assert fast == pytest.approx(slow, abs=0.02)  # two seeds of the same resampling


def test_epsilon_is_the_best_of_the_tested_thresholds_by_brute_force():
    rng = np.random.default_rng(7)
    for _ in range(20):
        n = int(rng.integers(30, 2000))
        membership = rng.random(n) < rng.uniform(0.2, 0.8)
        if membership.all() or not membership.any():
            continue
        scores = np.round(rng.normal(size=n) + rng.uniform(0, 4) * membership, 1)
        bound = epsilon_lower_bound(scores, membership, delta=1e-5)
        fpr, tpr, thresholds = roc_curve(scores, membership)
        tp, fp = np.rint(tpr * membership.sum()), np.rint(fpr * (~membership).sum())
        confidence = 1 - 0.05 / bound.thresholds_tested
        lo = clopper_pearson(tp, membership.sum(), confidence)[0]
        hi = clopper_pearson(fp, (~membership).sum(), confidence)[1]
        every = epsilon_from_rates(lo, hi, 1e-5)
        # no untested threshold is used, and the tested ones are the ROC's own points
        assert bound.epsilon <= every.max() + 1e-12
        assert bound.epsilon in set(every.tolist()) | {0.0}


def test_a_chance_attack_on_a_large_pool_certifies_nothing():
    for seed in range(3):
        rng = np.random.default_rng(seed)
        membership = rng.random(20_000) < 0.5
        bound = epsilon_lower_bound(rng.normal(size=20_000), membership, delta=1e-5)
        assert bound.epsilon < 0.05 and bound.thresholds_tested < 100


@pytest.mark.parametrize("mu", [1.0, 4.0])
def test_the_bound_stays_below_a_known_mechanisms_epsilon(mu):
    """Scores N(mu, 1) for members, N(0, 1) for the others: the test of a mu-GDP
    mechanism (Dong et al. 2019), whose exact epsilon at delta is known."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    def delta_of(eps):
        return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2)

    true_eps = brentq(lambda e: delta_of(e) - 1e-5, 0, 50)
    bounds = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        membership = rng.random(4000) < 0.5
        scores = rng.normal(size=4000) + mu * membership
        bounds.append(epsilon_lower_bound(scores, membership, delta=1e-5).epsilon)
    assert 0 < max(bounds) < true_eps
