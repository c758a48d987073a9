"""Location-30: Foursquare check-ins in Bangkok, the MIA authors' archive."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mia_bench.data.tabular import TabularMembershipDataModule, read_labeled_csv


class Location(TabularMembershipDataModule):
    """5,010 users, 446 binary features (visited region types), 30 classes.

    From Shokri et al., "Membership Inference Attacks against Machine Learning Models"
    (S&P 2017). ``root`` holds ``dataset_location.tgz``, whose single file ``bangkok``
    is a headerless CSV: a quoted label ``"1".."30"``, then the 446 features.
    """

    num_classes = 30
    input_shape = (446,)
    pool_size = 5010
    query_views = ("plain",)
    archive_name = "dataset_location.tgz"
    url = "https://github.com/privacytrustlab/datasets/raw/master/dataset_location.tgz"
    md5 = "66851c781a61f51b35ead292b5f303e3"

    def parse(self, archive: Path) -> tuple[np.ndarray, np.ndarray]:
        return read_labeled_csv(archive, "bangkok", self.num_classes)  # [5010, 446], [5010]
