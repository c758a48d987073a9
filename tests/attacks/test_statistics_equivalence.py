"""The attacks on sufficient statistics against the frozen full-logits path they replace.

``benchmarks/baseline`` holds the scoring code as it was when every reference's logits
were held as float64 ``[R, N, A, C]``. Fed the same logits, the statistics path gives the
same scores (statistics derived in float64); fed statistics stored as float32, as the
recorder writes them, scores move by float32 rounding only, and the metrics not at all.
"""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import member_like
from test_rmia import random_inputs

from benchmarks.baseline.inputs import AttackInputs as OldInputs
from benchmarks.baseline.pairs import PAIRS
from mia_bench import statistics
from mia_bench.attacks import AttackInputs, lira
from mia_bench.metrics import auc
from mia_bench.statistics import ReferenceStats, compute_statistics


def test_arrays() -> list[tuple[AttackInputs, np.ndarray]]:
    """The attack tests' arrays: member-like groups and unbalanced random references."""
    out = [member_like(seed, population=True) for seed in range(3)]
    for seed in range(3):
        x = random_inputs(seed, n=40)
        out.append((x, ~x.population))
    return out


ARRAYS = test_arrays()
test_arrays.__test__ = False  # a helper, not a test


def _old(x: AttackInputs, logits_type: type = np.float64) -> OldInputs:
    return OldInputs(
        x.logits.astype(logits_type),
        x.labels,
        x.ref_logits.astype(logits_type),
        x.ref_keep,
        x.population,
    )


def _stored(x: AttackInputs) -> AttackInputs:
    """``x`` as an audit reads it from the store: float32 logits and float32 statistics."""
    logits, ref_logits = x.logits.astype(np.float32), x.ref_logits.astype(np.float32)
    return AttackInputs(
        logits,
        x.labels,
        ref_keep=x.ref_keep,
        population=x.population,
        stats=compute_statistics(logits, x.labels),
        ref_stats=ReferenceStats(compute_statistics(ref_logits, x.labels, axis=1)),
    )


@pytest.mark.parametrize("name", sorted(PAIRS))
@pytest.mark.parametrize("case", range(len(ARRAYS)))
def test_same_scores_from_the_same_logits(name: str, case: int) -> None:
    x, _ = ARRAYS[case]
    old, new = PAIRS[name]
    np.testing.assert_allclose(new(x), old(_old(x)), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", sorted(PAIRS))
@pytest.mark.parametrize("case", range(len(ARRAYS)))
def test_float32_statistics_move_scores_by_rounding_only(name: str, case: int) -> None:
    x, membership = ARRAYS[case]
    old, new = PAIRS[name]
    want, got = old(_old(x, np.float32)), new(_stored(x))
    scale = max(1.0, np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * scale)
    assert auc(got, membership) == pytest.approx(auc(want, membership), abs=1e-6)


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_blocks_of_few_examples_change_nothing(name: str, monkeypatch) -> None:
    x, _ = ARRAYS[0]
    stored = _stored(x)
    whole = PAIRS[name][1](stored)
    monkeypatch.setattr(statistics, "BLOCK_ELEMENTS", 7 * x.num_references)
    assert stored.ref_stats.block_size() == 3  # 7 R numbers per block, 2 views
    np.testing.assert_allclose(PAIRS[name][1](_stored(x)), whole, rtol=1e-12, atol=1e-12)


def test_memmapped_rows_are_the_references() -> None:
    # a leave-one-out pick of rows of an [M, N, A] array reads as those references
    x, _ = ARRAYS[0]
    full = compute_statistics(x.ref_logits, x.labels, ["scaled_logit"], axis=1, dtype=np.float64)
    rows = np.arange(1, x.num_references)
    picked = AttackInputs(
        x.logits,
        x.labels,
        ref_keep=x.ref_keep[rows],
        ref_stats=ReferenceStats(full, rows),
    )
    direct = AttackInputs(
        x.logits, x.labels, ref_logits=x.ref_logits[rows], ref_keep=x.ref_keep[rows]
    )
    np.testing.assert_allclose(lira.lira(picked), lira.lira(direct), rtol=0, atol=1e-6)
