"""The membership design over a Dataset of your own.

mia-bench's callbacks read a run's membership design from ``trainer.datamodule``: its
keep row, the whole pool once in index order as ``(x, y, index)`` batches, and the query
views (the contract is :data:`mia_bench.checks.DATA_CONTRACT`). Every
:class:`~mia_bench.data.membership.MembershipDataModule` has them. Two ways to one for a
pool of your own:

* wrap a map-style ``Dataset`` whose item ``n`` is ``(x_n, y_n)`` in
  :class:`DatasetMembership` (also from YAML: ``data.class_path:
  mia_bench.data.DatasetMembership`` with ``dataset.class_path: my_pkg.MyDataset``);
* or subclass ``MembershipDataModule`` and implement ``load_pool()``, returning
  :func:`pool_of_dataset` ``(dataset)`` or a :class:`~mia_bench.data.membership.Pool`
  of arrays.

A ``TensorDataset(inputs, labels)`` is served as tensors (batches by indexing, no
per-example Python); any other dataset item by item through a ``DataLoader``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from types import FrameType
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from mia_bench.augment import query_views as check_query_views
from mia_bench.augment import resolve_views
from mia_bench.data.membership import MembershipDataModule, Pool


class DatasetInputs:
    """The inputs of a map-style dataset of ``(x, y)`` items, item ``n`` read when asked.

    >>> inputs = DatasetInputs([(torch.zeros(2), 0), (torch.ones(2), 1)])
    >>> len(inputs), inputs[1].tolist()
    (2, [1.0, 1.0])
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, n: int) -> Any:
        return self.dataset[n][0]


def dataset_labels(dataset: Dataset, labels: Sequence[int] | None = None) -> np.ndarray:
    """``int64[N]`` class labels of a dataset: ``labels`` if given, else its ``targets``
    (torchvision's datasets have them), else read item by item.

    Raises:
        ValueError: a label is not a whole number >= 0.

    >>> dataset_labels([(0.0, 2), (1.0, 0)]).tolist()
    [2, 0]
    """
    if labels is None:
        labels = getattr(dataset, "targets", None)
    if labels is None:
        labels = [int(dataset[n][1]) for n in range(len(dataset))]
    found = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    whole = found.astype(np.int64)
    if found.ndim != 1 or not np.array_equal(whole, found) or (whole < 0).any():
        raise ValueError(
            f"the pool's labels must be class indices 0..C-1, one per example; got "
            f"{found.dtype}{list(found.shape)}: give y_n as an int (or pass labels=)"
        )
    return whole


def pool_of_dataset(dataset: Dataset, labels: Sequence[int] | None = None) -> Pool:
    """The pool of a map-style dataset whose item ``n`` is ``(x_n, y_n)``.

    A ``TensorDataset(inputs, labels)`` becomes its tensors (served by tensor batches);
    any other dataset is read item by item (served by ``DataLoader``).

    >>> pool = pool_of_dataset(TensorDataset(torch.zeros(3, 2), torch.tensor([0, 1, 1])))
    >>> type(pool.inputs).__name__, pool.labels.tolist()
    ('Tensor', [0, 1, 1])
    """
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        inputs, targets = dataset.tensors
        given = targets if labels is None else labels
        return Pool(inputs=inputs, labels=dataset_labels(dataset, given))
    return Pool(inputs=DatasetInputs(dataset), labels=dataset_labels(dataset, labels))


class DatasetMembership(MembershipDataModule):
    """One run's membership design over your own dataset: keep row, loaders, query views.

    The dataset is the pool (every candidate example, indexed ``0..N-1``); run
    ``run_index`` of a group of ``num_runs`` trains on its row of the keep matrix
    (:mod:`mia_bench.data.splits`), tests on the rest, and the audit loader yields the
    whole pool in index order; every batch is ``(x, y, index)``.

    Args:
        dataset: a map-style ``Dataset`` whose item ``n`` is ``(x_n, y_n)``, ``y_n`` a
            class index; ``TensorDataset(inputs, labels)`` is served fastest.
        num_classes: C; default ``max(label) + 1``.
        query_views: views of every example the signals are recorded under, view 0
            ``plain`` (image views such as ``mirror`` need ``[C, H, W]`` inputs).
        labels: ``int[N]`` labels, for a dataset without ``targets`` whose items are
            slow to read (otherwise they are read once, item by item).
        **kwargs: the arguments of :class:`~mia_bench.data.membership.MembershipDataModule`:
            the group's design (``run_index``, ``num_runs``, ``pkeep``, ``split_seed``),
            ``batch_size``, ``eval_batch_size``, ``num_workers`` (for datasets other than
            ``TensorDataset``), ``property_classes``; ``root`` and ``download`` are unused.

    >>> data = TensorDataset(torch.rand(8, 3), torch.arange(8) % 2)
    >>> dm = DatasetMembership(data, num_runs=2, run_index=1)
    >>> int(dm.keep.sum()), dm.num_classes, dm.input_shape
    (4, 2, (3,))
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        num_classes: int | None = None,
        query_views: Sequence[str] = ("plain",),
        labels: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dataset = dataset
        self.labels = labels
        check_query_views(query_views)  # unknown names, or a first view other than plain
        self.query_views = resolve_views(query_views)
        self.num_classes = num_classes or int(self.pool.labels.max()) + 1
        self.input_shape = tuple(np.shape(self.pool.inputs[0]))

    def save_hyperparameters(
        self,
        *args: Any,
        ignore: Sequence[str] | str | None = None,
        frame: FrameType | None = None,
        logger: bool = True,
    ) -> None:
        """Lightning's, without ``dataset`` and ``labels`` (a checkpoint then holds plain
        values only, which ``torch.load(weights_only=True)`` reads, and the dataset is not
        copied) and ``num_classes`` (a model's hyperparameter too: Lightning refuses two
        values of one name, and None here is the model's C)."""
        ignore = [ignore] if isinstance(ignore, str) else list(ignore or ())
        frame = frame or inspect.currentframe().f_back  # the caller's, as Lightning's own
        ignore += ["dataset", "labels", "num_classes"]
        super().save_hyperparameters(*args, ignore=ignore, frame=frame, logger=logger)

    def load_pool(self) -> Pool:
        return pool_of_dataset(self.dataset, self.labels)

    def membership_info(self) -> dict[str, Any]:
        """As a MembershipDataModule's, with the dataset's class as ``dataset``."""
        return super().membership_info() | {"dataset": type(self.dataset).__name__}
