"""The keep matrix: balanced, deterministic, validated."""

from __future__ import annotations

import numpy as np
import pytest

from mia_bench.data.digits import Digits
from mia_bench.data.splits import keep_matrix, keep_row


@pytest.mark.parametrize(("num_runs", "pkeep"), [(2, 0.5), (8, 0.5), (10, 0.3)])
def test_every_example_is_in_for_pkeep_times_m_runs(num_runs: int, pkeep: float) -> None:
    keep = keep_matrix(101, num_runs, pkeep, split_seed=3)
    assert keep.shape == (num_runs, 101) and keep.dtype == bool
    np.testing.assert_array_equal(keep.sum(axis=0), round(pkeep * num_runs))


def test_same_seed_same_matrix_other_seed_other_matrix() -> None:
    a = keep_matrix(200, 4, 0.5, split_seed=0)
    np.testing.assert_array_equal(a, keep_matrix(200, 4, 0.5, split_seed=0))
    assert not np.array_equal(a, keep_matrix(200, 4, 0.5, split_seed=1))


def test_rows_differ_and_keep_row_is_a_row() -> None:
    keep = keep_matrix(200, 4, 0.5, split_seed=0)
    assert len({row.tobytes() for row in keep}) == 4
    np.testing.assert_array_equal(keep_row(200, 4, 0.5, 0, run_index=2), keep[2])


@pytest.mark.parametrize("run_index", [-1, 4])
def test_run_index_outside_range_is_rejected(run_index: int) -> None:
    with pytest.raises(ValueError, match="run_index"):
        keep_row(10, 4, 0.5, 0, run_index)
    with pytest.raises(ValueError, match="run_index"):
        Digits(run_index=run_index, num_runs=4)


def test_runs_times_pkeep_must_be_whole() -> None:
    with pytest.raises(ValueError, match="not a whole number"):
        keep_matrix(10, 3, 0.5, split_seed=0)
    with pytest.raises(ValueError, match="not a whole number"):
        Digits(num_runs=3, pkeep=0.5)
