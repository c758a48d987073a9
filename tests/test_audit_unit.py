"""The audit engine on synthetic arrays (no training)."""

from __future__ import annotations

import numpy as np
import pytest

from mia_bench.attacks import get_attack
from mia_bench.audit.engine import AuditResult, build_inputs, score_attacks, summarize_scores
from mia_bench.data.splits import keep_matrix
from mia_bench.metrics import auc
from mia_bench.store.artifacts import EpochSignals


def _signals(n=300, r=9, seed=0):
    """Target = row 0 of a balanced keep matrix; layer fc0 carries membership, embedding not."""
    rng = np.random.default_rng(seed)
    keep = keep_matrix(n, r + 1, 0.5, seed)  # [R+1, N]
    labels = rng.integers(0, 3, n)
    logits = rng.normal(size=(r + 1, n, 1, 3)).astype(np.float32)
    logits[np.arange(r + 1)[:, None], np.arange(n), 0, labels] += 2.0 * keep
    fc0 = rng.normal(size=(r + 1, n, 6)) + 1.5 * keep[..., None]
    noise = rng.normal(size=(r + 1, n, 6))
    target = EpochSignals(0, logits[0], labels, {"embedding": noise[0], "fc0": fc0[0]})
    return target, keep, logits, {"embedding": noise, "fc0": fc0}


def test_reference_attacks_are_skipped_without_references():
    target, keep, _, _ = _signals()
    scores = score_attacks(
        [get_attack("loss"), get_attack("lira_online")], build_inputs(target, None, keep[0])
    )
    assert list(scores) == ["loss"]


def test_layer_sweep_adds_one_entry_per_layer_and_finds_the_leaky_one():
    from mia_bench.store.references import References

    target, keep, logits, emb = _signals()
    refs = References(logits[1:], keep[1:], {k: v[1:] for k, v in emb.items()}, [], [])
    inputs = build_inputs(target, refs, keep[0])
    scores = score_attacks([get_attack("nn_embedding")], inputs, ["embedding", "fc0"])
    assert set(scores) == {"nn_embedding", "nn_embedding_fc0"}
    assert auc(scores["nn_embedding_fc0"], keep[0]) > auc(scores["nn_embedding"], keep[0]) + 0.2


def test_population_is_the_targets_nonmembers():
    target, keep, logits, _ = _signals()
    from mia_bench.store.references import References

    inputs = build_inputs(target, References(logits[1:], keep[1:], {}, [], []), keep[0])
    np.testing.assert_array_equal(inputs.population, ~keep[0])


def test_aggregate_is_mean_and_population_std_over_targets():
    result = AuditResult(epoch=0)
    result.per_target = {0: {"loss/auc": 0.6}, 1: {"loss/auc": 0.7}, 2: {"loss/auc": 0.9}}
    agg = result.aggregate()["loss/auc"]
    assert agg["mean"] == pytest.approx(np.mean([0.6, 0.7, 0.9]))
    assert agg["std"] == pytest.approx(np.std([0.6, 0.7, 0.9]))
    assert agg["num_targets"] == 3


def test_summarize_scores_names_metrics_by_attack():
    keep = np.array([True, False, True, False])
    out = summarize_scores({"a": np.array([4.0, 1.0, 3.0, 2.0])}, keep, (0.5,))
    assert out["a/auc"] == 1.0 and out["a/tpr_at_fpr_0.5"] == 1.0
