"""Base DataModule of the membership design.

A dataset module only says how to load its *pool* (every candidate example, indexed
``0..N-1``). This base class turns the pool and one row of the group's keep matrix
into the loaders Lightning needs:

* ``train_dataloader``: the run's members (keep row True), shuffled;
* ``val_dataloader`` / ``test_dataloader``: the run's non-members (its OUT half);
* ``audit_dataloader``: the whole pool once, in index order, for signals.

Every batch is ``(x, y, index)`` where ``index`` is the pool index of each example.

Two paths make those batches. A pool whose batches can be made by tensor indexing
(:meth:`MembershipDataModule.batch_transform` returns a transform: tabular features, uint8
images with ``crop``/``mirror``/``cutout``) is served by
:class:`~mia_bench.data.batches.TensorBatches`: no per-example Python, no workers, an
epoch order that is a function of the run's seed and the epoch, and the pool kept on the
training device. Any other pool (text, ``autoaugment``) keeps a ``DataLoader`` over
:class:`PoolDataset`; so do multi-device runs, whose DataLoaders Lightning shards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from mia_bench.data.batches import BatchTransform, TensorBatches, keep_rows
from mia_bench.data.splits import keep_matrix, keep_row, runs_in

SPLITS = ("train", "val", "test", "audit")


@dataclass(frozen=True)
class Pool:
    """Every candidate example of a dataset.

    Attributes:
        inputs: ``[N, ...]`` array or tensor (features, or uint8 HWC images).
        labels: ``int64[N]`` class labels.
    """

    inputs: Any
    labels: np.ndarray

    def __post_init__(self) -> None:
        if len(self.inputs) != len(self.labels):
            raise ValueError(f"pool has {len(self.inputs)} inputs but {len(self.labels)} labels")


class PoolDataset(Dataset):
    """Item ``n`` of the pool as ``(transform(x_n), y_n, n)``."""

    def __init__(self, pool: Pool, transform: Callable[[Any], Any] | None = None) -> None:
        self.pool = pool
        self.labels = torch.as_tensor(np.asarray(pool.labels), dtype=torch.long)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, n: int) -> tuple[Any, torch.Tensor, int]:
        x = self.pool.inputs[n]
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels[n], n


class MembershipDataModule(L.LightningDataModule):
    """One run's view of a pool: members to train on, non-members to test on.

    Subclasses set ``num_classes``, ``input_shape``, ``query_views`` (and ``pool_size``
    where the dataset fixes it) and implement :meth:`load_pool`; images also override
    :meth:`train_transform` / :meth:`eval_transform`.

    Args:
        root: folder holding the dataset files (or where they are downloaded to).
        run_index: which row of the keep matrix this run trains on, in
            ``[0, num_runs)``.
        num_runs: M, runs in the group.
        pkeep: fraction of runs that train on each example; ``num_runs * pkeep``
            must be whole.
        split_seed: seed of the keep matrix, shared by the whole group.
        batch_size: training batch size.
        eval_batch_size: batch size of the test and audit loaders.
        num_workers: DataLoader workers of the per-example path; the tensor path
            (:meth:`batch_transform`) has none and ignores it.
        download: fetch missing files from the dataset's canonical URL.
        property_classes: derived properties for property inference, as
            ``{name: [classes]}``: the property is 1 for examples whose label is one of
            those classes, else 0 (e.g. ``{vehicle: [0, 1, 8, 9]}`` on CIFAR-10).
            Datasets with real attributes (CelebA, IMDb ratings) offer more.
    """

    num_classes: int = 0
    input_shape: tuple[int, ...] = ()
    query_views: tuple[str, ...] = ("plain",)
    pool_size: int | None = None  # N where fixed by the dataset, known without loading it

    def __init__(
        self,
        root: str = "data",
        run_index: int = 0,
        num_runs: int = 2,
        pkeep: float = 0.5,
        split_seed: int = 0,
        batch_size: int = 128,
        eval_batch_size: int = 1024,
        num_workers: int = 0,
        download: bool = False,
        property_classes: dict[str, list[int]] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        runs_in(num_runs, pkeep)  # validates the design early
        if not 0 <= run_index < num_runs:
            raise ValueError(
                f"run_index={run_index} is outside [0, num_runs={num_runs}): set "
                f"--data.run_index to one of 0..{num_runs - 1} or raise --data.num_runs."
            )
        self.root = root
        self.run_index = run_index
        self.num_runs = num_runs
        self.pkeep = pkeep
        self.split_seed = split_seed
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.download = download
        self.property_classes = dict(property_classes or {})
        self._pool: Pool | None = None
        self._pool_tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    # --- what a dataset provides -------------------------------------------------
    def load_pool(self) -> Pool:
        """Load every candidate example. Subclasses implement this."""
        raise NotImplementedError

    def dataset_properties(self) -> dict[str, np.ndarray]:
        """Real per-example properties of the dataset, ``{name: int64[N]}``.

        Datasets with attributes beyond the label override this (CelebA's 40
        attributes, IMDb's star rating); the default has none.
        """
        return {}

    def properties(self) -> dict[str, np.ndarray]:
        """Every property of the pool, ``{name: int64[N]}``: real ones, then derived ones.

        A property is what property inference predicts from a target's embeddings; the
        target was not trained to predict it.

        Raises:
            ValueError: if a derived property names a class outside ``[0, num_classes)``.
        """
        found = dict(self.dataset_properties())
        labels = np.asarray(self.pool.labels)
        for name, classes in self.property_classes.items():
            bad = [c for c in classes if not 0 <= c < self.num_classes]
            if bad:
                raise ValueError(
                    f"property_classes[{name!r}] names classes {bad} outside "
                    f"[0, {self.num_classes}): use class indices of this dataset"
                )
            found[name] = np.isin(labels, classes).astype(np.int64)
        return found

    def train_transform(self) -> Callable[[Any], Any] | None:
        """Per-example transform of training examples (augmentation)."""
        return self.eval_transform()

    def eval_transform(self) -> Callable[[Any], Any] | None:
        """Per-example transform for test and audit examples."""
        return None

    def batch_transform(self, train: bool) -> BatchTransform | None:
        """The whole-batch twin of the train (or eval) transform; None keeps DataLoaders.

        A dataset declares here that its loaders can be
        :class:`~mia_bench.data.batches.TensorBatches`: it returns the transform from
        pool rows ``[B, ...]`` to model inputs that gives what the per-example transform
        gives. The default serves pools of arrays with no per-example transform (their
        rows are the inputs, e.g. tabular features); a pool with one keeps the
        ``DataLoader`` path unless it overrides this (images do), and so does a pool
        read item by item from a ``Dataset``.
        """
        transform = self.train_transform() if train else self.eval_transform()
        rows = isinstance(self.pool.inputs, np.ndarray | torch.Tensor)
        return keep_rows if transform is None and rows else None

    # --- the membership design ---------------------------------------------------
    @property
    def pool(self) -> Pool:
        """The pool, loaded once on first use."""
        if self._pool is None:
            self._pool = self.load_pool()
        return self._pool

    @property
    def num_examples(self) -> int:
        """N, the size of the pool."""
        return len(self.pool.labels)

    def known_num_examples(self) -> int:
        """N without loading the pool where the dataset fixes it (``pool_size``).

        Otherwise (a subset such as ``max_examples``) the pool is loaded to count it.
        """
        return self.num_examples if self.pool_size is None else self.pool_size

    @property
    def keep(self) -> np.ndarray:
        """``bool[N]``: this run's row of the keep matrix (True = member)."""
        return keep_row(
            self.num_examples, self.num_runs, self.pkeep, self.split_seed, self.run_index
        )

    def keep_matrix(self) -> np.ndarray:
        """``bool[M, N]``: the whole group's keep matrix."""
        return keep_matrix(self.num_examples, self.num_runs, self.pkeep, self.split_seed)

    def membership_info(self) -> dict[str, Any]:
        """What identifies this run's design (logged as tags and params)."""
        return {
            "dataset": type(self).__name__,
            "num_examples": self.num_examples,
            "num_runs": self.num_runs,
            "pkeep": self.pkeep,
            "split_seed": self.split_seed,
            "run_index": self.run_index,
        }

    # --- loaders -----------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        keep = self.keep
        self.members = np.flatnonzero(keep)
        self.nonmembers = np.flatnonzero(~keep)
        self.train_set = Subset(PoolDataset(self.pool, self.train_transform()), self.members)
        self.test_set = Subset(PoolDataset(self.pool, self.eval_transform()), self.nonmembers)
        self.audit_set = PoolDataset(self.pool, self.eval_transform())

    def _split(self, split: str) -> tuple[Dataset, np.ndarray | None, int]:
        """``split``'s dataset, pool indices (None: all) and batch size."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}: use one of {list(SPLITS)}")
        if not hasattr(self, "audit_set"):
            self.setup("fit")
        if split == "train":
            return self.train_set, self.members, self.batch_size
        if split == "audit":
            return self.audit_set, None, self.eval_batch_size
        return self.test_set, self.nonmembers, self.eval_batch_size

    def example_dataloader(self, split: str) -> DataLoader:
        """The per-example ``DataLoader`` of ``split`` (``train``, ``val``, ``test``, ``audit``).

        What pools without a :meth:`batch_transform` are always served by, and what a
        wrapper that needs a dataset asks for (DP-SGD's Poisson sampler).
        """
        dataset, _, batch_size = self._split(split)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=split == "train",
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def pool_tensors(self, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """The pool as ``(inputs [N, ...], labels int64[N])`` on ``device``, made once per device.

        On the CPU the inputs share the pool's memory (no copy).
        """
        key = str(torch.device(device))
        if key not in self._pool_tensors:
            inputs = torch.as_tensor(np.ascontiguousarray(self.pool.inputs))  # [N, ...]
            labels = torch.as_tensor(np.asarray(self.pool.labels), dtype=torch.long)  # [N]
            self._pool_tensors[key] = (inputs.to(key), labels.to(key))
        return self._pool_tensors[key]

    def _loader(self, split: str, device: torch.device | None) -> DataLoader | TensorBatches:
        """Tensor batches of ``split`` on ``device`` where the pool allows, else a DataLoader."""
        transform = self.batch_transform(train=split == "train")
        if transform is None or device is None:
            return self.example_dataloader(split)
        _, indices, batch_size = self._split(split)
        indices = torch.arange(self.num_examples) if indices is None else torch.from_numpy(indices)
        return TensorBatches(
            *self.pool_tensors(device),
            indices,
            batch_size,
            shuffle=split == "train",
            transform=transform,
        )

    def _training_device(self) -> torch.device | None:
        """Where the training loaders keep the pool: the trainer's device (CPU without one).

        None (DataLoaders) on several devices, where Lightning shards DataLoaders.
        """
        trainer = self.trainer
        if trainer is None:
            return torch.device("cpu")
        return trainer.strategy.root_device if trainer.world_size == 1 else None

    def train_dataloader(self) -> DataLoader | TensorBatches:
        return self._loader("train", self._training_device())

    def val_dataloader(self) -> DataLoader | TensorBatches:
        return self._loader("val", self._training_device())

    def test_dataloader(self) -> DataLoader | TensorBatches:
        return self._loader("test", self._training_device())

    def audit_dataloader(self) -> DataLoader | TensorBatches:
        """The whole pool once, in index order (for signals), on the CPU.

        Its consumers (signal recorder, checkpoint audits, self-distillation) move each
        batch to their net's device themselves.
        """
        return self._loader("audit", torch.device("cpu"))
