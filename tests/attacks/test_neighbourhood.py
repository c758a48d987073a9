"""Neighbourhood comparison: pool neighbours in an embedding space, and perturbed copies."""

from __future__ import annotations

import numpy as np
import pytest

from mia_bench import signals
from mia_bench.attacks import AttackInputs, get_attack
from mia_bench.attacks.neighbourhood import nearest_neighbours, neighbourhood_attack
from mia_bench.audit.engine import score_attacks
from mia_bench.metrics import auc


def test_nearest_neighbours_equal_a_sort_per_record():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(70, 5))
    got = nearest_neighbours(features, 4)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    for i in range(70):
        sims = [(-(unit[i] @ unit[j]), j) for j in range(70) if j != i]
        assert got[i].tolist() == [j for _, j in sorted(sims)[:4]], i


def _difficulty_pool(seed: int = 0, n: int = 600):
    """Records in 6 clusters of very different difficulty; members fit 0.5 nats better.

    The loss attack is confused by the difficulty; neighbours in the embedding share it.
    """
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, 6, n)
    features = np.eye(6)[cluster] * 5 + rng.normal(size=(n, 6)) * 0.3
    membership = rng.random(n) < 0.5
    true_logit = cluster * 1.0 + 0.8 * membership + 0.1 * rng.normal(size=n)  # [N]
    logits = np.zeros((n, 1, 2))
    logits[:, 0, 0] = true_logit
    inputs = AttackInputs(logits, np.zeros(n, dtype=np.int64), {"embedding": features})
    return inputs, membership


def test_pool_neighbourhood_calibrates_difficulty_away():
    inputs, membership = _difficulty_pool()
    loss_auc = auc(get_attack("loss")(inputs), membership)
    nbr_auc = auc(get_attack("neighbourhood")(inputs), membership)
    assert nbr_auc > 0.9 > loss_auc


def test_pool_neighbourhood_matches_a_loop():
    inputs, _ = _difficulty_pool(seed=1, n=120)
    got = neighbourhood_attack(inputs, k=5)
    loss = signals.loss(inputs.logits[:, 0], inputs.labels)
    nbrs = nearest_neighbours(inputs.embeddings["embedding"], 5)
    for n in range(120):
        values = loss[nbrs[n]]
        assert got[n] == pytest.approx((values.mean() - loss[n]) / (values.std() + 1e-6))


def test_view_neighbourhood_hand_computed_and_needs_two_views():
    logits = np.log(np.array([[[0.8, 0.2], [0.5, 0.5], [0.2, 0.8]]]))  # [1, 3 views, 2]
    scores = get_attack("neighbourhood_views")(AttackInputs(logits, np.array([0])))
    expected = (-np.log(0.5) - np.log(0.2)) / 2 + np.log(0.8)
    assert scores[0] == pytest.approx(expected)
    one_view = AttackInputs(logits[:, :1], np.array([0]))
    with pytest.raises(ValueError, match="query views"):
        get_attack("neighbourhood_views")(one_view)
    # the harness leaves it out instead of failing on single-view signals
    assert "neighbourhood_views" not in score_attacks([get_attack("neighbourhood_views")], one_view)


def test_layer_sweep_reports_each_layer():
    inputs, membership = _difficulty_pool(n=200)
    noise = np.random.default_rng(3).normal(size=(200, 4))
    inputs = AttackInputs(
        inputs.logits, inputs.labels, {"embedding": inputs.embeddings["embedding"], "fc0": noise}
    )
    scores = score_attacks([get_attack("neighbourhood")], inputs, ["fc0", "embedding"])
    assert set(scores) == {"neighbourhood", "neighbourhood_fc0"}
    # the informative layer's neighbourhood calibrates; random neighbours do not
    assert auc(scores["neighbourhood"], membership) > auc(scores["neighbourhood_fc0"], membership)


def test_missing_layer_is_named():
    inputs = AttackInputs(np.zeros((5, 1, 2)), np.zeros(5, dtype=np.int64))
    with pytest.raises(ValueError, match="'embedding' embeddings"):
        neighbourhood_attack(inputs)
