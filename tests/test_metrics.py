"""metrics.py against sklearn, brute force over thresholds, and hand computations."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from mia_bench import metrics

SEEDS = [0, 1, 2, 3]


def make_scores(seed: int, kind: str, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Random membership and scores that lean towards members; ``kind`` sets the ties."""
    rng = np.random.default_rng(seed)
    membership = rng.random(n) < 0.4
    scores = rng.normal(size=n) + 0.7 * membership
    if kind == "rounded":
        scores = scores.round(1)  # heavy ties
    elif kind == "integer":
        scores = np.floor(scores).astype(np.int64)  # a handful of distinct values
    return scores, membership


def brute_force_tpr_at_fpr(scores, membership, max_fpr) -> tuple[float, float]:
    """Try every threshold (each distinct score, and +inf): the best admissible TPR, and
    the lowest FPR reaching it."""
    admissible = []
    for t in [np.inf, *np.unique(scores)]:
        pred = scores >= t
        fpr, tpr = pred[~membership].mean(), pred[membership].mean()
        if fpr <= max_fpr:
            admissible.append((tpr, -fpr))
    tpr, neg_fpr = max(admissible)
    return tpr, -neg_fpr


KINDS = ["continuous", "rounded", "integer"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", SEEDS)
def test_roc_and_auc_equal_sklearn(seed: int, kind: str) -> None:
    scores, membership = make_scores(seed, kind)
    fpr, tpr, thresholds = metrics.roc_curve(scores, membership)
    sk_fpr, sk_tpr, sk_thr = sk_roc_curve(membership, scores, drop_intermediate=False)
    np.testing.assert_array_equal(fpr, sk_fpr)
    np.testing.assert_array_equal(tpr, sk_tpr)
    np.testing.assert_array_equal(thresholds, sk_thr)
    np.testing.assert_allclose(metrics.auc(scores, membership), roc_auc_score(membership, scores))


@pytest.mark.parametrize("max_fpr", [0.0, 0.001, 0.01, 0.05, 0.2, 1.0])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", SEEDS)
def test_tpr_at_fpr_equals_brute_force(seed: int, kind: str, max_fpr: float) -> None:
    scores, membership = make_scores(seed, kind)
    r = metrics.tpr_at_fpr(scores, membership, max_fpr)
    assert (r.tpr, r.fpr) == pytest.approx(brute_force_tpr_at_fpr(scores, membership, max_fpr))
    assert r.fpr <= max_fpr and r.max_fpr == max_fpr
    assert r.num_negatives == np.count_nonzero(~membership)


@pytest.mark.parametrize("seed", SEEDS)
def test_balanced_accuracy_equals_brute_force(seed: int) -> None:
    scores, membership = make_scores(seed, "rounded")
    best = max(
        ((scores >= t)[membership].mean() + (scores < t)[~membership].mean()) / 2
        for t in [np.inf, *np.unique(scores)]
    )
    assert metrics.balanced_accuracy(scores, membership) == pytest.approx(best)


def test_hand_computed_four_points() -> None:
    # scores 4, 3, 2, 1 with truth member, non-member, member, non-member.
    # thresholds inf, 4, 3, 2, 1 give (fpr, tpr) = (0,0), (0,.5), (.5,.5), (.5,1), (1,1).
    scores = np.array([4.0, 3.0, 2.0, 1.0])
    membership = np.array([True, False, True, False])
    fpr, tpr, _ = metrics.roc_curve(scores, membership)
    assert fpr.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    # area: 0.5 * 0.5 + 0.5 * 1.0 = 0.75 (3 of the 4 member/non-member pairs are ordered)
    assert metrics.auc(scores, membership) == 0.75
    # best (tpr + 1 - fpr) / 2: (0.5 + 1) / 2 at (0, .5) and (1 + .5) / 2 at (.5, 1)
    assert metrics.balanced_accuracy(scores, membership) == 0.75
    # fpr <= 0.49 admits only fpr = 0, best tpr there is 0.5; fpr <= 0.5 reaches tpr 1
    assert metrics.tpr_at_fpr(scores, membership, 0.49) == metrics.TprAtFpr(0.5, 0.0, 0.49, 2)
    assert metrics.tpr_at_fpr(scores, membership, 0.5) == metrics.TprAtFpr(1.0, 0.5, 0.5, 2)


def test_unresolvable_budget_still_answers() -> None:
    scores, membership = make_scores(0, "continuous", n=100)  # ~60 negatives: 1/60 > 0.001
    r = metrics.tpr_at_fpr(scores, membership, 0.001)
    assert r.fpr == 0.0 and not r.resolved
    assert metrics.tpr_at_fpr(scores, membership, 0.05).resolved


def test_summarize_keys_and_values() -> None:
    scores, membership = make_scores(1, "rounded")
    d = metrics.summarize(scores, membership)
    assert list(d) == [
        "auc",
        "balanced_acc",
        "tpr_at_fpr_0.001",
        "fpr_at_fpr_0.001",
        "tpr_at_fpr_0.01",
        "fpr_at_fpr_0.01",
        "num_members",
        "num_nonmembers",
    ]
    assert all(type(v) is float for v in d.values())
    assert d["auc"] == metrics.auc(scores, membership)
    assert d["balanced_acc"] == metrics.balanced_accuracy(scores, membership)
    r = metrics.tpr_at_fpr(scores, membership, 0.01)
    assert (d["tpr_at_fpr_0.01"], d["fpr_at_fpr_0.01"]) == (r.tpr, r.fpr)
    assert d["num_members"] == membership.sum()
    assert d["num_nonmembers"] == (~membership).sum()


def test_perfect_and_reversed_scores() -> None:
    membership = np.array([True, True, False, False, False])
    perfect = membership.astype(float)
    assert metrics.auc(perfect, membership) == 1.0
    assert metrics.tpr_at_fpr(perfect, membership, 0.0).tpr == 1.0
    assert metrics.auc(-perfect, membership) == 0.0
    assert metrics.balanced_accuracy(-perfect, membership) == 0.5


def test_integer_membership_accepted() -> None:
    scores, membership = make_scores(2, "continuous")
    assert metrics.auc(scores, membership.astype(int)) == metrics.auc(scores, membership)


@pytest.mark.parametrize(
    "scores, membership, match",
    [
        (np.zeros(3), np.array([True, False]), "same length"),
        (np.zeros((2, 2)), np.array([[True, False]] * 2), "1-D"),
        (np.array([0.0, np.nan]), np.array([True, False]), "NaN or inf"),
        (np.array([0.0, np.inf]), np.array([True, False]), "NaN or inf"),
        (np.zeros(3), np.ones(3, dtype=bool), "at least one member and one non-member"),
        (np.zeros(3), np.zeros(3, dtype=bool), "at least one member and one non-member"),
        (np.zeros(2), np.array([0.5, 1.0]), "membership must be bool"),
        (np.zeros(2), np.array([2, 0]), "membership must be bool"),
        (np.array(["a", "b"]), np.array([True, False]), "real numbers"),
    ],
)
def test_validation_errors(scores, membership, match: str) -> None:
    for fn in (metrics.roc_curve, metrics.auc, metrics.balanced_accuracy, metrics.summarize):
        with pytest.raises(ValueError, match=match):
            fn(scores, membership)


@pytest.mark.parametrize("max_fpr", [-0.1, 1.5])
def test_max_fpr_out_of_range(max_fpr: float) -> None:
    with pytest.raises(ValueError, match="max_fpr"):
        metrics.tpr_at_fpr(np.array([1.0, 0.0]), np.array([True, False]), max_fpr)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [1, 7, 50, 300])
def test_precision_at_k_is_the_mean_over_random_tie_breaks(seed: int, kind: str, k: int) -> None:
    scores, membership = make_scores(seed, kind)
    rng = np.random.default_rng(seed + 100)
    # brute force: break ties at random (a random secondary key), take the top k, average
    draws = []
    for _ in range(2000 if kind != "continuous" else 1):
        order = np.lexsort((rng.random(scores.size), -scores.astype(np.float64)))
        draws.append(membership[order[:k]].mean())
    tolerance = 0.02 if kind != "continuous" else 1e-12
    assert metrics.precision_at_k(scores, membership, k) == pytest.approx(
        np.mean(draws), abs=tolerance
    )


def test_precision_at_k_bounds() -> None:
    scores, membership = make_scores(0, "continuous")
    assert metrics.precision_at_k(scores, membership, scores.size) == pytest.approx(
        membership.mean()
    )
    for bad in (0, scores.size + 1):
        with pytest.raises(ValueError, match="k must lie in"):
            metrics.precision_at_k(scores, membership, bad)
