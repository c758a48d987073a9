"""Random CIFAR-shaped images, for speed benchmarks that need no data set on disk."""

from __future__ import annotations

from typing import Any

import numpy as np

from mia_bench.data.cifar import CIFAR10_MEAN, CIFAR10_STD, ImageMembershipDataModule
from mia_bench.data.membership import Pool


class SyntheticImages(ImageMembershipDataModule):
    """``num_examples`` random uint8 ``32x32x3`` images with random labels of 10 classes.

    Nothing in them is learnable beyond memorization: for measuring speed (images/s,
    the share of time signals take) at any pool size, never for attack results. The
    pool is a pure function of ``seed``.

    Args:
        num_examples: N, the pool size (e.g. 30,000: CIFAR-10's training half).
        seed: seed of the images and labels.
        **kwargs: the arguments of :class:`ImageMembershipDataModule` (``augment``,
            ``run_index``, ``num_runs``, ``batch_size``, ...); ``root`` is unused.
    """

    num_classes = 10
    mean = CIFAR10_MEAN
    std = CIFAR10_STD

    def __init__(self, *, num_examples: int = 30_000, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_examples < 2:
            raise ValueError(f"num_examples must be >= 2, got {num_examples}")
        self.pool_size = num_examples
        self.seed = seed

    def load_pool(self) -> Pool:
        rng = np.random.default_rng(self.seed)
        n, (c, h, w) = self.pool_size, self.input_shape
        inputs = rng.integers(0, 256, size=(n, h, w, c), dtype=np.uint8)  # [N, H, W, C]
        labels = rng.integers(0, self.num_classes, size=n).astype(np.int64)  # [N]
        return Pool(inputs=inputs, labels=labels)
