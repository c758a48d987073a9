"""Base DataModule of the membership design.

A dataset module only says how to load its *pool* (every candidate example, indexed
``0..N-1``). This base class turns the pool and one row of the group's keep matrix
into the loaders Lightning needs:

* ``train_dataloader``: the run's members (keep row True), shuffled;
* ``val_dataloader`` / ``test_dataloader``: the run's non-members (its OUT half);
* ``audit_dataloader``: the whole pool once, in index order, for signals.

Every batch is ``(x, y, index)`` where ``index`` is the pool index of each example.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from mia_bench.data.splits import keep_matrix, keep_row, runs_in


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
        num_workers: DataLoader workers.
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
        members = np.flatnonzero(keep)
        nonmembers = np.flatnonzero(~keep)
        self.train_set = Subset(PoolDataset(self.pool, self.train_transform()), members)
        self.test_set = Subset(PoolDataset(self.pool, self.eval_transform()), nonmembers)
        self.audit_set = PoolDataset(self.pool, self.eval_transform())

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def audit_dataloader(self) -> DataLoader:
        """The whole pool once, in index order (for signals)."""
        if not hasattr(self, "audit_set"):
            self.setup("fit")
        return self._loader(self.audit_set, self.eval_batch_size, shuffle=False)
