"""SyntheticImages: a CIFAR-shaped pool of any size from a seed, for speed benchmarks."""

from __future__ import annotations

import numpy as np
import pytest

from mia_bench.data import SyntheticImages


def test_pool_is_cifar_shaped_and_a_function_of_the_seed():
    dm = SyntheticImages(num_examples=300, seed=1, num_runs=4)
    again, other = SyntheticImages(num_examples=300, seed=1), SyntheticImages(num_examples=300)
    assert dm.pool.inputs.shape == (300, 32, 32, 3) and dm.pool.inputs.dtype == np.uint8
    assert dm.known_num_examples() == dm.num_examples == 300
    assert set(np.unique(dm.pool.labels)) <= set(range(10))
    np.testing.assert_array_equal(dm.pool.inputs, again.pool.inputs)
    assert not np.array_equal(dm.pool.inputs, other.pool.inputs)
    dm.setup("fit")
    x, y, index = next(iter(dm.train_dataloader()))
    assert tuple(x.shape[1:]) == dm.input_shape == (3, 32, 32) and x.dtype.is_floating_point
    assert (dm.keep_matrix().sum(axis=0) == 2).all()  # each image IN for 2 of 4 runs


def test_a_pool_of_one_is_refused():
    with pytest.raises(ValueError, match="num_examples must be >= 2"):
        SyntheticImages(num_examples=1)
