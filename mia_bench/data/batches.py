"""Batches of an in-memory pool by tensor indexing: no per-example Python.

Which examples each batch of an epoch holds is a function of the run's seed and the
epoch alone (:func:`epoch_order`), so a run resumed at epoch ``e`` draws the batches an
uninterrupted run would have, and a run trained in a pack of runs
(:mod:`mia_bench.study.pack`) draws the batches it draws alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

BatchTransform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
"""Pool rows ``[B, ...]`` (on the loader's device) and the epoch's CPU generator -> model
inputs ``[B, ...]``: the whole-batch twin of a per-example transform."""


def epoch_generator(seed: int, epoch: int, device: str | torch.device = "cpu") -> torch.Generator:
    """The generator of one run's draws in one epoch (order and augmentations).

    Seeded from ``(seed, epoch)`` through NumPy's ``SeedSequence``, so neighbouring
    seeds and epochs give unrelated streams.

    >>> a = torch.rand(2, generator=epoch_generator(0, 1))
    >>> bool((a == torch.rand(2, generator=epoch_generator(0, 1))).all())
    True
    """
    state = np.random.SeedSequence([int(seed) % 2**63, int(epoch)]).generate_state(2, np.uint32)
    return torch.Generator(device=device).manual_seed(int(state[0]) << 32 | int(state[1]))


def epoch_plan(
    indices: torch.Tensor, seed: int, epoch: int, shuffle: bool = True
) -> tuple[torch.Tensor, torch.Generator]:
    """One epoch's order and the generator its augmentations go on drawing from.

    The order is drawn first from :func:`epoch_generator` ``(seed, epoch)``; what the
    epoch draws next (augmentations) continues that stream, so it is not a replay of
    the order's random numbers.

    Args:
        indices: ``int64[n]`` pool indices of the examples (a run's members).
        seed: the run's seed (``mia.seed``).
        epoch: the epoch, from 0.
        shuffle: False keeps ``indices`` in their order.

    Returns:
        ``(order int64[n], generator)``, a CPU generator.

    >>> order, g = epoch_plan(torch.arange(5), 0, 3)
    >>> torch.equal(order, epoch_order(torch.arange(5), 0, 3))
    True
    """
    generator = epoch_generator(seed, epoch)
    if not shuffle:
        return indices, generator
    perm = torch.randperm(len(indices), generator=generator)
    return indices[perm.to(indices.device)], generator


def epoch_order(indices: torch.Tensor, seed: int, epoch: int, shuffle: bool = True) -> torch.Tensor:
    """The pool indices of one epoch in the order they are batched.

    Args:
        indices: ``int64[n]`` pool indices of the examples (a run's members).
        seed: the run's seed (``mia.seed``).
        epoch: the epoch, from 0.
        shuffle: False keeps ``indices`` in their order.

    >>> idx = torch.arange(10, 20)
    >>> sorted(epoch_order(idx, 0, 0).tolist()) == idx.tolist()
    True
    >>> epoch_order(idx, 0, 0).tolist() == epoch_order(idx, 0, 1).tolist()
    False
    """
    return epoch_plan(indices, seed, epoch, shuffle)[0]


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Batches of an epoch of ``n`` examples.

    >>> num_batches(10, 4), num_batches(10, 4, drop_last=True)
    (3, 2)
    """
    return n // batch_size if drop_last else -(-n // batch_size)


def keep_rows(rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The :data:`BatchTransform` of pools whose rows are the model inputs (features).

    >>> keep_rows(torch.ones(2, 3), torch.Generator()).shape
    torch.Size([2, 3])
    """
    return rows


class EpochSampler:
    """Which pool indices an epoch visits, in order; Lightning calls :meth:`set_epoch`.

    Lightning's fit loop calls ``set_epoch(epoch)`` on ``loader.sampler`` before each
    epoch (``lightning.fabric.utilities.data._set_sampler_epoch``), as for a
    ``DistributedSampler``; outside Lightning, call it yourself each epoch.

    Args:
        indices: ``int64[n]`` pool indices of the loader's examples.
        seed: the run's seed.
        shuffle: draw each epoch's order with :func:`epoch_order`; False keeps ``indices``.
    """

    def __init__(self, indices: torch.Tensor, seed: int, shuffle: bool) -> None:
        self.indices = indices
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration draw epoch ``epoch``."""
        self.epoch = int(epoch)

    def plan(self) -> tuple[torch.Tensor, torch.Generator]:
        """This epoch's ``(order int64[n], generator)`` (see :func:`epoch_plan`)."""
        return epoch_plan(self.indices, self.seed, self.epoch, self.shuffle)

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.plan()[0].tolist())


class TensorBatches:
    """Batches ``(x, y, index)`` of an in-memory pool by tensor indexing: no per-example Python.

    Yields what a ``DataLoader`` over :class:`~mia_bench.data.membership.PoolDataset`
    yields (``x`` from ``transform`` of the pool rows, ``y`` int64, ``index`` int64 pool
    indices), on the device the pool tensors are on. An epoch's order is
    :func:`epoch_order` ``(indices, seed, epoch)`` (``epoch`` set through ``.sampler``),
    and ``transform`` draws its augmentations from the same epoch's generator after the
    order, so a run resumed at epoch ``e`` draws the batches and augmentations an
    uninterrupted run draws. There are no workers: ``num_workers`` does not apply.

    Args:
        inputs: ``[N, ...]`` the whole pool's rows (features, or uint8 HWC images).
        labels: ``int64[N]``, on the device of ``inputs``.
        indices: ``int64[n]`` pool indices this loader serves (members, non-members, all).
        batch_size: examples per batch (the last one may be smaller).
        shuffle: a new order each epoch; False: ``indices`` in their order.
        transform: pool rows -> model inputs (see :data:`BatchTransform`).
        seed: the run's seed; None: ``torch.initial_seed()`` now (after Lightning's
            ``seed_everything(seed + run_index)``, the run's seed).
        drop_last: drop the last batch when it is smaller than ``batch_size``.

    >>> pool = torch.arange(10.0).view(5, 2)
    >>> loader = TensorBatches(pool, torch.zeros(5, dtype=torch.long), torch.arange(5), 2)
    >>> len(loader), [index.tolist() for _, _, index in loader]
    (3, [[0, 1], [2, 3], [4]])
    """

    batch_sampler = None  # Lightning reads it next to ``sampler``

    def __init__(
        self,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        indices: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        transform: BatchTransform = keep_rows,
        seed: int | None = None,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: set a batch size of at least 1")
        if len(inputs) != len(labels):
            raise ValueError(f"the pool has {len(inputs)} inputs but {len(labels)} labels")
        self.inputs, self.labels = inputs, labels
        seed = torch.initial_seed() if seed is None else seed
        self.sampler = EpochSampler(indices.cpu(), seed, shuffle)
        self.batch_size = batch_size
        self.transform = transform
        self.drop_last = drop_last

    @property
    def device(self) -> torch.device:
        """Where the pool tensors (and so the batches) are."""
        return self.inputs.device

    def to(self, device: str | torch.device) -> TensorBatches:
        """Keep the pool on ``device`` (batches and augmentations are then made there)."""
        self.inputs, self.labels = self.inputs.to(device), self.labels.to(device)
        return self

    def __len__(self) -> int:
        return num_batches(len(self.sampler), self.batch_size, self.drop_last)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        order, generator = self.sampler.plan()  # [n] on the CPU
        order = order.to(self.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]  # [B]
            yield self.transform(self.inputs[index], generator), self.labels[index], index
