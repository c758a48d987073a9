"""Purchase100: shopping histories (Kaggle "Acquire Valued Shoppers"), the MIA authors' archive."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mia_bench.data.tabular import TabularMembershipDataModule, read_labeled_csv


class Purchase100(TabularMembershipDataModule):
    """197,324 customers, 600 binary features (bought product type or not), 100 classes.

    From Shokri et al. (S&P 2017). ``root`` holds ``dataset_purchase.tgz``, whose file
    ``dataset_purchase`` is a headerless CSV: a label ``1..100``, then the 600 features.
    """

    num_classes = 100
    input_shape = (600,)
    pool_size = 197_324
    query_views = ("plain",)
    archive_name = "dataset_purchase.tgz"
    url = "https://github.com/privacytrustlab/datasets/raw/master/dataset_purchase.tgz"

    def parse(self, archive: Path) -> tuple[np.ndarray, np.ndarray]:
        return read_labeled_csv(archive, "dataset_purchase", self.num_classes)  # [N, 600]
