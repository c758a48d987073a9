"""Batches of an in-memory pool by tensor indexing: no per-example Python.

Which examples each batch of an epoch holds is a function of the run's seed and the
epoch alone (:func:`epoch_order`), so a run resumed at epoch ``e`` draws the batches an
uninterrupted run would have, and a run trained in a pack of runs
(:mod:`mia_bench.study.pack`) draws the batches it draws alone.
"""

from __future__ import annotations

import numpy as np
import torch


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
    if not shuffle:
        return indices
    perm = torch.randperm(len(indices), generator=epoch_generator(seed, epoch))
    return indices[perm.to(indices.device)]


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Batches of an epoch of ``n`` examples.

    >>> num_batches(10, 4), num_batches(10, 4, drop_last=True)
    (3, 2)
    """
    return n // batch_size if drop_last else -(-n // batch_size)
