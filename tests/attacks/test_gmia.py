"""GMIA (Long et al. 2018): vulnerable-record selection and the direct hypothesis test."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from synthetic import member_like

from mia_bench import signals
from mia_bench.attacks import AttackInputs, get_attack
from mia_bench.attacks.gmia import (
    direct_log_pvalues,
    gmia_report,
    indirect_log_pvalues,
    neighbour_counts,
    reference_features,
    select_vulnerable,
)


def test_neighbour_counts_equal_a_double_loop():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 4))
    population = rng.random(60) < 0.7
    got = neighbour_counts(features, population, threshold=0.5)
    for i in range(60):
        expected = 0
        for j in range(60):
            cos = (
                features[i]
                @ features[j]
                / np.linalg.norm(features[i])
                / np.linalg.norm(features[j])
            )
            expected += int(i != j and population[j] and cos >= 0.5)
        assert got[i] == expected, i


def test_direct_pvalues_equal_scipy_loops():
    inputs, _ = member_like(1, n=80, r=10)
    got = direct_log_pvalues(inputs)
    target = signals.loss(inputs.logits[:, 0], inputs.labels)
    for n in range(80):
        out_losses = [
            signals.loss(inputs.ref_logits[r, n, 0][None], inputs.labels[n : n + 1])[0]
            for r in range(10)
            if not inputs.ref_keep[r, n]
        ]
        p = norm.cdf(target[n], loc=np.mean(out_losses), scale=np.std(out_losses))
        assert np.exp(got[n]) == pytest.approx(p, rel=1e-9, abs=1e-300), n


def _planted_outlier(seed: int = 0, n: int = 200, r: int = 16):
    """Records in 4 tight clusters plus one outlier (index 0) that only IN models fit."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(4, 8))
    features = centers[rng.integers(0, 4, n)] + 0.05 * rng.normal(size=(n, 8))
    features[0] = 3.0 * rng.normal(size=8)  # a direction no cluster shares
    labels = rng.integers(0, 3, n)
    keep = np.argsort(rng.random((r, n)), axis=0) < r // 2  # [R, N] balanced
    membership = rng.random(n) < 0.5
    membership[0] = True  # the target trained on the outlier

    def logits(member):  # member [..., N] -> [..., N, 1, 3]: IN fits record 0 far better
        margin = 1.0 + 0.05 * member
        margin = np.where(np.arange(n) == 0, 0.2 + 4.0 * member, margin)
        noise = 0.05 * rng.normal(size=(*member.shape, 3))
        return (np.eye(3)[labels] * margin[..., None] + noise)[..., None, :]

    ref_embeddings = features[None] + 0.01 * rng.normal(size=(r, n, 8))
    inputs = AttackInputs(
        logits(membership),
        labels,
        embeddings={"embedding": features},
        ref_logits=logits(keep),
        ref_keep=keep,
        ref_embeddings={"embedding": ref_embeddings},
    )
    return inputs, membership


def test_planted_outlier_is_selected_and_inferred_a_member():
    inputs, membership = _planted_outlier()
    features = reference_features(inputs)
    selected = select_vulnerable(features, np.ones(len(features), bool), 0.9, top_k=1)
    assert np.flatnonzero(selected).tolist() == [0]
    log_p = direct_log_pvalues(inputs)
    assert np.exp(log_p[0]) < 1e-3
    report = gmia_report(log_p, selected, membership, alpha=0.01)
    assert (report.num_selected, report.num_predicted, report.precision) == (1, 1, 1.0)


def test_shuffled_membership_drives_precision_to_chance():
    inputs, membership = member_like(2, n=2000, r=16)
    log_p = direct_log_pvalues(inputs)
    selected = np.ones(2000, dtype=bool)  # attack every record
    true = gmia_report(log_p, selected, membership, alpha=0.05)
    assert true.num_predicted > 100 and true.precision > 0.8
    shuffled = np.random.default_rng(0).permutation(membership)
    chance = gmia_report(log_p, selected, shuffled, alpha=0.05)
    assert abs(chance.precision - shuffled.mean()) < 0.06
    assert chance.baseline_precision == pytest.approx(shuffled.mean())


def test_report_compares_other_attacks_at_the_same_number_of_predictions():
    inputs, membership = member_like(3, n=500, r=16)
    log_p = direct_log_pvalues(inputs)
    loss = get_attack("loss")(inputs)
    report = gmia_report(log_p, np.ones(500, bool), membership, 0.01, {"loss": loss})
    order = np.argsort(-loss)[: report.num_predicted]
    assert report.others["loss"] == pytest.approx(membership[order].mean())
    metrics = report.as_metrics()
    assert metrics["gmia/num_predicted"] == report.num_predicted
    assert "gmia/loss_precision" in metrics


def test_selection_needs_a_rule_and_the_reference_layer():
    inputs, _ = _planted_outlier()
    with pytest.raises(ValueError, match="max_neighbours, top_k"):
        select_vulnerable(reference_features(inputs), np.ones(200, bool), top_k=None)
    with pytest.raises(ValueError, match="'fc0' embeddings"):
        reference_features(inputs, "fc0")
    counts = neighbour_counts(reference_features(inputs), np.ones(200, bool), 0.9)
    capped = select_vulnerable(reference_features(inputs), np.ones(200, bool), 0.9, 0, None)
    assert np.array_equal(capped, counts == 0)


def _enhanced(target_trained_on_0: bool, seed: int = 0, n: int = 300, r: int = 16):
    """Record 0's presence lowers the loss of its 10 look-alikes (records 1..10)."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, 6))
    features[1:11] = features[0] + 0.05 * rng.normal(size=(10, 6))
    labels = np.zeros(n, dtype=np.int64)
    keep = np.argsort(rng.random((r, n)), axis=0) < r // 2
    membership = rng.random(n) < 0.5
    membership[0] = target_trained_on_0
    membership[1:11] = False  # the look-alikes are known non-members (the population)

    def logits(member):  # [..., N] -> [..., N, 1, 2]
        margin = 1.0 + 0.3 * member + 0.05 * rng.normal(size=member.shape)
        margin[..., 1:11] += 1.5 * member[..., :1]  # record 0 pulls its look-alikes up
        out = np.zeros((*member.shape, 1, 2))
        out[..., 0, 0] = margin
        return out

    inputs = AttackInputs(
        logits(membership),
        labels,
        ref_logits=logits(keep),
        ref_keep=keep,
        population=~membership,
    )
    return inputs, features


@pytest.mark.parametrize("member", [True, False])
def test_indirect_infers_record_from_its_enhancing_records_only(member):
    inputs, features = _enhanced(member)
    selected = np.zeros(300, dtype=bool)
    selected[0] = True
    log_p = indirect_log_pvalues(inputs, selected, features, enhancing=5)
    assert (np.exp(log_p[0]) < 1e-3) == member
    assert np.all(log_p[1:] == 0)  # only selected records are tested
    # never queried on the record itself: its own outputs do not matter
    changed = inputs.logits.copy()
    changed[0] = -changed[0] * 10
    other = AttackInputs(
        changed,
        inputs.labels,
        ref_logits=inputs.ref_logits,
        ref_keep=inputs.ref_keep,
        population=inputs.population,
    )
    np.testing.assert_array_equal(indirect_log_pvalues(other, selected, features, 5), log_p)


def test_indirect_test_is_calibrated_when_look_alikes_move_together():
    """No record influences anything, but each model shifts a cluster's losses together:
    under H_out the test must reject about alpha of the records, not more."""
    rng = np.random.default_rng(5)
    n, r, clusters = 400, 40, 20
    cluster = np.arange(n) % clusters
    features = np.eye(clusters)[cluster] + 0.05 * rng.normal(size=(n, clusters))
    keep = np.argsort(rng.random((r, n)), axis=0) < r // 2
    membership = rng.random(n) < 0.5

    def logits(models: int):  # per-model, per-cluster shifts shared by look-alikes
        margin = (
            2.0
            + rng.normal(size=(models, clusters))[:, cluster]
            + 0.1 * rng.normal(size=(models, n))
        )
        out = np.zeros((models, n, 1, 2))
        out[..., 0, 0] = margin
        return out

    inputs = AttackInputs(
        logits(1)[0],
        np.zeros(n, dtype=np.int64),
        ref_logits=logits(r),
        ref_keep=keep,
        population=~membership,
    )
    log_p = indirect_log_pvalues(inputs, np.ones(n, dtype=bool), features, enhancing=5)
    tested = log_p != 0
    assert tested.sum() > 300
    rejected = (log_p[tested] <= np.log(0.05)).mean()
    assert rejected < 0.12  # a naive sum of z-scores over sqrt(E) rejects 29% here
