"""AG News (Zhang, Zhao & LeCun 2015): news titles and descriptions in 4 topics.

Files of the ``ag_news_csv`` release: ``train.csv`` (120,000 rows) and ``test.csv``
(7,600 rows), headerless, every field quoted: class index 1-4, title, description.
"""

from __future__ import annotations

import csv
import gzip
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mia_bench.data.download import (
    CorruptDataError,
    check_md5,
    ensure_file,
    missing_file_error,
    reading,
    tar_member,
)
from mia_bench.data.tabular import shift_labels
from mia_bench.data.text import TextMembershipDataModule

URL = "https://s3.amazonaws.com/fast-ai-nlp/ag_news_csv.tgz"
CLASSES = ("World", "Sports", "Business", "Sci/Tech")
SPLITS = ("train", "test")
REFETCH = (
    f"replace it with the original file, or delete it and pass --data.download true to "
    f"extract it again from {URL}"
)
CSV_MD5 = {"train": "b1a00f826fdfbd249f79597b59e1dc12", "test": "d52ea96a97a2d943681189a97654912d"}


def news_text(title: str, description: str) -> str:
    """Title and description as one text; the release's backslash line breaks as spaces.

    >>> news_text("Title", "First line.\\\\Second line.")
    'Title First line. Second line.'
    """
    return f"{title} {description}".replace("\\", " ")


def read_ag_news_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """One split's file (``.csv`` or ``.csv.gz``) as ``(texts, labels int64[N] in 0..3)``.

    Raises:
        CorruptDataError: if the file is truncated or damaged, or a row does not have 3
            fields.
        ValueError: if a class index is not 1..4.
    """
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with reading(path, REFETCH), opener(path, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    bad = next((i for i, row in enumerate(rows) if len(row) != 3 or not row[0].isdigit()), None)
    if bad is not None or not rows:
        found = rows[bad][:3] if bad is not None else "no rows"
        raise CorruptDataError(
            path,
            f"row {0 if bad is None else bad + 1} is {found}, expected 3 fields (class "
            "index 1-4, title, description): is it a whole file of the ag_news_csv release?",
            REFETCH,
        )
    labels = shift_labels(np.array([float(row[0]) for row in rows]), len(CLASSES), str(path))
    return [news_text(title, description) for _, title, description in rows], labels


def extract_csv(archive: Path, split: str, target: Path, md5: str | None) -> Path:
    """Extract ``ag_news_csv/<split>.csv`` from the archive to ``target`` atomically.

    Raises:
        ValueError: if the extracted file's md5 is not ``md5`` (None: no check).
    """
    part = target.with_name(target.name + ".part")
    try:
        with tar_member(archive, f"ag_news_csv/{split}.csv") as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst)
        check_md5(part, md5)
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    return target


class AGNews(TextMembershipDataModule):
    """AG News: news items in 4 classes (World 0, Sports 1, Business 2, Sci/Tech 3).

    The pool is the ``splits`` files concatenated in that order. ``root`` holds
    ``train.csv`` and/or ``test.csv``, each optionally gzipped (``.csv.gz``); with
    ``download=True`` missing ones are extracted from ``ag_news_csv.tgz`` (fetched into
    ``root``, or already there). The text of an item is its title and description.
    There are no real properties: use ``property_classes``.

    Args:
        splits: which files form the pool, in order: ``train`` and/or ``test``. The
            project's offline copy has only the test split: pass ``[test]``.
        **kwargs: the arguments of :class:`TextMembershipDataModule`.
    """

    num_classes = 4
    archive_name = "ag_news_csv.tgz"
    url = URL
    csv_md5: dict[str, str] = CSV_MD5

    def __init__(self, *, splits: Sequence[str] = SPLITS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        unknown = [s for s in splits if s not in SPLITS]
        if unknown or not splits:
            raise ValueError(
                f"splits={list(splits)}: expected a non-empty list of {list(SPLITS)}, "
                "e.g. --data.splits '[test]'."
            )
        self.splits = list(splits)

    def split_path(self, split: str) -> Path:
        """The file of one split: ``<root>/<split>.csv`` or ``.csv.gz``, made if allowed.

        Raises:
            FileNotFoundError: if neither exists and it may not be downloaded.
        """
        plain, archive = Path(self.root) / f"{split}.csv", Path(self.root) / self.archive_name
        for path in (plain, plain.with_name(plain.name + ".gz")):
            if path.is_file():
                return path
        if not (archive.is_file() or self.download):
            raise missing_file_error(
                plain,
                self.url,
                hint=f"{split}.csv.gz (gzipped) is read too. The download is saved as "
                f"{archive} and {split}.csv extracted from it.",
            )
        ensure_file(archive, self.url, download=True)
        return extract_csv(archive, split, plain, self.csv_md5.get(split))

    def load_texts(self) -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
        parts = [read_ag_news_csv(self.split_path(split)) for split in self.splits]
        texts = [text for part_texts, _ in parts for text in part_texts]
        labels = np.concatenate([part_labels for _, part_labels in parts])  # [N]
        return texts, labels, {}
