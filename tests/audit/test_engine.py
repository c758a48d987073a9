"""The audit engine on synthetic arrays (no training)."""

from __future__ import annotations

import numpy as np
import pytest

from mia_bench.attacks import get_attack
from mia_bench.audit.engine import (
    AuditResult,
    TargetAudit,
    audit_target,
    build_inputs,
    score_attacks,
)
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
    refs = References(
        keep[1:], [], [], logits=logits[1:], embeddings={k: v[1:] for k, v in emb.items()}
    )
    inputs = build_inputs(target, refs, keep[0])
    scores = score_attacks([get_attack("nn_embedding")], inputs, ["embedding", "fc0"])
    assert set(scores) == {"nn_embedding", "nn_embedding_fc0"}
    assert auc(scores["nn_embedding_fc0"], keep[0]) > auc(scores["nn_embedding"], keep[0]) + 0.2


def test_population_is_the_targets_nonmembers():
    target, keep, logits, _ = _signals()
    from mia_bench.store.references import References

    inputs = build_inputs(target, References(keep[1:], [], [], logits=logits[1:]), keep[0])
    np.testing.assert_array_equal(inputs.population, ~keep[0])


def test_aggregate_is_mean_and_population_std_over_targets():
    result = AuditResult(epoch=0)
    result.per_target = {
        i: TargetAudit({"loss": {"auc": v}}, {}, {}, []) for i, v in enumerate([0.6, 0.7, 0.9])
    }
    agg = result.aggregate()["loss/auc"]
    assert agg["mean"] == pytest.approx(np.mean([0.6, 0.7, 0.9]))
    assert agg["std"] == pytest.approx(np.std([0.6, 0.7, 0.9]))
    assert agg["num_targets"] == 3


def test_audit_target_nests_metrics_by_attack_and_flattens_at_one_boundary():
    keep = np.array([True, False, True, False])
    logits = np.array([[4.0, 0], [1.0, 0], [3.0, 0], [2.0, 0]], dtype=np.float32)[:, None]
    signals = EpochSignals(0, logits, np.zeros(4, dtype=np.int64))
    audit = audit_target(signals, keep, None, [get_attack("loss")], (0.5,))
    assert audit.metrics["loss"]["auc"] == 1.0 and audit.metrics["loss"]["tpr_at_fpr_0.5"] == 1.0
    assert audit.flat()["loss/auc"] == 1.0 and audit.references == []


def test_group_audit_loads_each_runs_signals_once_per_epoch(monkeypatch, tmp_path):
    """Leave-one-out over R runs reads R signal files, not R * (R - 1)."""
    from mia_bench.audit import engine
    from mia_bench.store import references
    from mia_bench.store.artifacts import save_keep, save_signals
    from mia_bench.store.groups import GroupRun

    target, keep, logits, _ = _signals(n=120, r=5)
    runs = []
    for i in range(6):
        folder = tmp_path / f"run{i}"
        save_keep(folder, keep[i])
        save_signals(folder, EpochSignals(0, logits[i], target.labels))
        runs.append(GroupRun(f"id{i}", "g", i, "FINISHED", folder, {}))
    calls = []
    real = references.load_signals
    monkeypatch.setattr(
        references, "load_signals", lambda *a, **k: calls.append(a) or real(*a, **k)
    )
    result = engine.audit_group(runs, [get_attack("lira_offline")], 0, progress=False)
    assert len(calls) == 6 and sorted(result.per_target) == list(range(6))
    used = result.used()
    assert all(len(u["references"]) == 5 for u in used.values())
    assert all(u["run_id"] not in {r for r, _ in u["references"]} for u in used.values())
