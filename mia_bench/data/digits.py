"""scikit-learn's bundled handwritten digits: the embedded default (no network)."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

from mia_bench.data.membership import MembershipDataModule, Pool


class Digits(MembershipDataModule):
    """1,797 8x8 digit images as 64 features scaled to [0, 1]; 10 classes.

    The data ship with scikit-learn, so ``root`` and ``download`` are unused.
    """

    num_classes = 10
    input_shape = (64,)
    pool_size = 1797

    def load_pool(self) -> Pool:
        bunch = load_digits()
        inputs = (bunch.data / 16.0).astype(np.float32)  # [1797, 64]
        return Pool(inputs=inputs, labels=bunch.target.astype(np.int64))
