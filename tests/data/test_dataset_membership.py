"""DatasetMembership and pool_of_dataset: the membership design over a Dataset of one's own."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from mia_bench.data import DatasetMembership, Digits, MembershipDataModule, pool_of_dataset
from mia_bench.data.batches import TensorBatches

DESIGN = {"num_runs": 4, "run_index": 1, "split_seed": 7, "batch_size": 64}


class ItemDataset(Dataset):
    """A dataset read item by item, ``(x_n, y_n)``: neither tensors nor ``targets``."""

    def __init__(self, inputs: np.ndarray, labels: np.ndarray) -> None:
        self.inputs, self.labels = inputs, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, n: int) -> tuple[torch.Tensor, int]:
        return torch.as_tensor(self.inputs[n]), int(self.labels[n])


@pytest.fixture(scope="module")
def digits() -> Digits:
    return Digits(**DESIGN)


def _items(digits: Digits) -> ItemDataset:
    return ItemDataset(digits.pool.inputs, digits.pool.labels)


def _tensor_dataset(digits: Digits) -> TensorDataset:
    pool = digits.pool
    return TensorDataset(torch.as_tensor(pool.inputs), torch.as_tensor(pool.labels))


def _indices(loader) -> np.ndarray:
    return torch.cat([index for _, _, index in loader]).numpy()


@pytest.mark.parametrize("kind", ["tensors", "items"])
def test_a_dataset_gets_the_design_of_a_mia_bench_data_module(digits, kind):
    pool = digits.pool
    dataset = _tensor_dataset(digits) if kind == "tensors" else _items(digits)
    dm = DatasetMembership(dataset, **DESIGN)
    np.testing.assert_array_equal(dm.keep, digits.keep)  # the group's keep row
    assert (dm.num_classes, dm.input_shape, dm.query_views) == (10, (64,), ("plain",))
    members = _indices(dm.train_dataloader())
    np.testing.assert_array_equal(np.sort(members), np.flatnonzero(dm.keep))
    np.testing.assert_array_equal(_indices(dm.test_dataloader()), np.flatnonzero(~dm.keep))
    np.testing.assert_array_equal(_indices(dm.audit_dataloader()), np.arange(len(pool.labels)))
    x, y, index = next(iter(dm.audit_dataloader()))
    np.testing.assert_array_equal(x.numpy(), pool.inputs[index.numpy()])
    np.testing.assert_array_equal(y.numpy(), pool.labels[index.numpy()])
    # tensors are batched by indexing; a dataset read item by item keeps a DataLoader
    expected = TensorBatches if kind == "tensors" else DataLoader
    assert isinstance(dm.train_dataloader(), expected)


def test_the_pool_is_named_after_the_dataset_class(digits):
    info = DatasetMembership(_tensor_dataset(digits), **DESIGN).membership_info()
    assert info["dataset"] == "TensorDataset" and info["num_examples"] == 1797


def test_hyperparameters_hold_plain_values_only(digits):
    """Lightning keeps a data module's hyperparameters in every checkpoint: a dataset
    there would stop ``torch.load(weights_only=True)`` (checkpoint audits) reading it."""
    dm = DatasetMembership(_items(digits), labels=digits.pool.labels)
    assert "dataset" not in dm.hparams and "labels" not in dm.hparams
    buffer = io.BytesIO()
    torch.save({"datamodule_hyper_parameters": dict(dm.hparams)}, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["datamodule_hyper_parameters"]["num_runs"] == 2


def test_a_subclass_with_load_pool_is_the_other_way_in(digits):
    class MyData(MembershipDataModule):
        num_classes, input_shape = 10, (64,)

        def load_pool(self):
            return pool_of_dataset(_items(digits))

    dm = MyData(**DESIGN)
    np.testing.assert_array_equal(_indices(dm.audit_dataloader()), np.arange(1797))
    np.testing.assert_array_equal(dm.keep, digits.keep)


@pytest.mark.parametrize(
    ("labels", "views", "message"),
    [
        (np.full(4, 0.5), ("plain",), "class indices"),
        (None, ("mirror",), "plain"),
    ],
)
def test_bad_labels_and_views_are_refused_at_once(labels, views, message):
    dataset = TensorDataset(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match=message):
        DatasetMembership(dataset, labels=labels, query_views=views)
