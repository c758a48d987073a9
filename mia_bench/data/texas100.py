"""Texas100: hospital discharge records (Texas DSHS), the MIA authors' archive."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mia_bench.data.tabular import TabularMembershipDataModule, read_csv_member, shift_labels


class Texas100(TabularMembershipDataModule):
    """67,330 patient stays, 6,169 binary features, 100 classes (main procedure).

    From Shokri et al. (S&P 2017). ``root`` holds ``dataset_texas.tgz``, which holds
    ``texas/100/feats`` (headerless CSV of the 6,169 features) and ``texas/100/labels``
    (one label ``1..100`` per line), row for row.
    """

    num_classes = 100
    input_shape = (6169,)
    pool_size = 67_330
    query_views = ("plain",)
    archive_name = "dataset_texas.tgz"
    url = "https://github.com/privacytrustlab/datasets/raw/master/dataset_texas.tgz"

    def parse(self, archive: Path) -> tuple[np.ndarray, np.ndarray]:
        features = read_csv_member(archive, "texas/100/feats")  # [N, 6169]
        raw = read_csv_member(archive, "texas/100/labels")[:, 0]  # [N]
        return features, shift_labels(raw, self.num_classes, f"{archive}:texas/100/labels")
