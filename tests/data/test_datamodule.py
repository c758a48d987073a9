"""MembershipDataModule on Digits: members train, non-members test, audit is the pool."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mia_bench.data import Digits


@pytest.fixture(scope="module")
def digits() -> Digits:
    dm = Digits(run_index=1, num_runs=4, pkeep=0.5, split_seed=7, batch_size=64)
    dm.setup("fit")
    return dm


def _indices(loader: torch.utils.data.DataLoader) -> np.ndarray:
    return torch.cat([index for _, _, index in loader]).numpy()


def test_train_loader_yields_exactly_the_members(digits: Digits) -> None:
    seen = _indices(digits.train_dataloader())
    np.testing.assert_array_equal(np.sort(seen), np.flatnonzero(digits.keep))


@pytest.mark.parametrize("loader", ["val_dataloader", "test_dataloader"])
def test_eval_loaders_yield_exactly_the_non_members(digits: Digits, loader: str) -> None:
    seen = _indices(getattr(digits, loader)())
    np.testing.assert_array_equal(seen, np.flatnonzero(~digits.keep))


def test_audit_loader_covers_the_pool_once_in_order(digits: Digits) -> None:
    seen = _indices(digits.audit_dataloader())
    np.testing.assert_array_equal(seen, np.arange(digits.num_examples))


def test_batches_carry_input_label_and_pool_index(digits: Digits) -> None:
    x, y, index = next(iter(digits.train_dataloader()))
    assert x.shape == (64, *digits.input_shape) and x.dtype == torch.float32
    np.testing.assert_array_equal(y.numpy(), digits.pool.labels[index.numpy()])
    np.testing.assert_array_equal(x.numpy(), digits.pool.inputs[index.numpy()])


def test_keep_is_the_row_of_the_group_matrix(digits: Digits) -> None:
    np.testing.assert_array_equal(digits.keep, digits.keep_matrix()[1])
