"""The records that leak: ranking by hand, order-free, and the comparison helpers."""

import numpy as np
import pandas as pd
import pytest

from mia_bench.audit.leaks import (
    exposed,
    flag_threshold,
    gmia_relation,
    leak_ranking,
    leaks_markdown,
    vulnerable,
)
from mia_bench.metrics import tpr_at_fpr


def _targets(seed=0, num_targets=6, size=400):
    rng = np.random.default_rng(seed)
    keeps = {t: rng.random(size) < 0.5 for t in range(num_targets)}
    leaky = np.zeros(size, dtype=bool)
    leaky[:10] = True  # the first 10 records score far above everyone when members
    scores = {t: rng.normal(size=size) + 8.0 * (k & leaky) for t, k in keeps.items()}
    return scores, keeps


def test_threshold_is_the_tpr_at_fpr_point():
    scores, keeps = _targets()
    s, k = scores[0], keeps[0]
    threshold = flag_threshold(s, k, 0.01)
    point = tpr_at_fpr(s, k, 0.01)
    assert (s[k] >= threshold).mean() == pytest.approx(point.tpr)
    assert (s[~k] >= threshold).mean() == pytest.approx(point.fpr)


def test_ranking_by_hand():
    # 2 targets of 4 records; threshold at FPR 0: above the best non-member
    scores = {0: np.array([5.0, 1.0, 0.0, 2.0]), 1: np.array([4.0, 3.0, 6.0, 0.5])}
    keeps = {0: np.array([True, True, False, False]), 1: np.array([True, False, True, False])}
    table = leak_ranking(scores, keeps, fpr=0.0, labels=np.array([7, 8, 9, 7]))
    # target 0 flags record 0 (5 > 2); target 1 flags 0 and 2 (4, 6 > 3)
    assert table["index"].tolist() == [0, 2, 1, 3]
    first = table.iloc[0]
    assert (first.times_member, first.times_flagged, first.flag_rate) == (2, 2, 1.0)
    assert first.label == 7 and first.mean_score == pytest.approx(4.5)
    assert table.iloc[2].flag_rate == 0.0 and np.isnan(table.iloc[3].flag_rate)


def test_leaky_records_rank_first():
    scores, keeps = _targets()
    top = vulnerable(leak_ranking(scores, keeps, fpr=0.01), top=10)
    assert sorted(top) == list(range(10))


def test_ranking_does_not_depend_on_target_names_or_order():
    scores, keeps = _targets(seed=3)
    table = leak_ranking(scores, keeps, fpr=0.01)
    rng = np.random.default_rng(1)
    names = rng.permutation(100)[: len(scores)]
    order = rng.permutation(len(scores))
    renamed_scores = {int(names[i]): scores[int(i)] for i in order}
    renamed_keeps = {int(names[i]): keeps[int(i)] for i in order}
    again = leak_ranking(renamed_scores, renamed_keeps, fpr=0.01)
    pd.testing.assert_frame_equal(table, again)


def test_exposed_counts_baseline_records_still_flagged():
    scores, keeps = _targets()
    base = leak_ranking(scores, keeps, fpr=0.01)
    found = vulnerable(base, top=10)
    assert exposed(found, base) == (10, 10)
    defended = {t: s - 8.0 * (s > 4) for t, s in scores.items()}  # the leak removed
    still, compared = exposed(found, leak_ranking(defended, keeps, fpr=0.01))
    assert compared == 10 and still <= 2


def test_gmia_relation_and_markdown():
    scores, keeps = _targets()
    table = leak_ranking(scores, keeps, fpr=0.01)
    relation = gmia_relation(table, {0: np.array([0, 1, 2, 50]), 1: np.array([3, 50])}, top=10)
    assert relation["gmia_selected"] == 5 and relation["top_in_gmia"] == 4
    assert relation["gmia_flag_rate"] > relation["pool_flag_rate"]
    text = leaks_markdown(table, "loss", 0.01, rows=3, gmia=relation)
    assert text.count("\n| ") == 4 and "4 of the top 10" in text
