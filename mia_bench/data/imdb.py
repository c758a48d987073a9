"""IMDb movie reviews (Large Movie Review Dataset v1.0): 50,000 labeled reviews.

The pool is read from ``<root>/imdb.csv.gz`` (columns ``review,sentiment,split,id,rating``;
rows train/neg, train/pos, test/neg, test/pos, each by id), the format of the project's
offline copy. With ``download=True`` it is built from the canonical Stanford archive.
"""

from __future__ import annotations

import csv
import gzip
import os
import re
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd

from mia_bench.data.download import CorruptDataError, ensure_file, missing_file_error, reading
from mia_bench.data.text import TextMembershipDataModule

URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
COLUMNS = ("review", "sentiment", "split", "id", "rating")
SENTIMENTS = ("negative", "positive")  # label 0, 1
REFETCH = f"delete it to rebuild it from {URL} (--data.download true)"
_REVIEW_FILE = re.compile(r"^(?:\./)?aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")

Row = tuple[str, str, str, int, int]  # review, sentiment, split, id, rating


def review_key(name: str) -> tuple[str, str, int, int] | None:
    """``(split, sentiment, id, rating)`` of a labeled review's archive path, else None.

    >>> review_key("aclImdb/test/pos/12_9.txt")
    ('test', 'positive', 12, 9)
    >>> review_key("aclImdb/train/unsup/5_0.txt") is None
    True
    """
    match = _REVIEW_FILE.match(name)
    if match is None:
        return None
    split, folder, review_id, rating = match.groups()
    return split, SENTIMENTS[folder == "pos"], int(review_id), int(rating)


def imdb_rows(archive: Path) -> list[Row]:
    """The labeled reviews of ``aclImdb_v1.tar.gz`` as rows of ``imdb.csv``, in its order.

    Raises:
        ValueError: if the archive holds no ``aclImdb/{train,test}/{pos,neg}`` reviews.
    """
    rows = []
    with tarfile.open(archive, "r|*") as tf:  # streamed: one pass over 100k members
        for info in tf:
            key = review_key(info.name)
            if key is None or not info.isfile():
                continue
            f = tf.extractfile(info)
            assert f is not None  # a regular file always has a file object
            split, sentiment, review_id, rating = key
            rows.append((f.read().decode("utf-8"), sentiment, split, review_id, rating))
    if not rows:
        raise ValueError(
            f"{archive} holds no aclImdb/{{train,test}}/{{pos,neg}}/<id>_<rating>.txt "
            f"reviews. Is it the archive from {URL}? Delete it and download it again."
        )
    rows.sort(key=lambda r: (r[2] != "train", r[1], r[3]))  # train first, neg first, by id
    return rows


def write_imdb_csv(rows: list[Row], path: Path) -> Path:
    """Write ``imdb.csv.gz`` atomically (``<path>.part``, then rename)."""
    part = path.with_name(path.name + ".part")
    try:
        with gzip.open(part, "wt", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(COLUMNS)
            writer.writerows(rows)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    return path


def read_imdb_csv(path: Path) -> pd.DataFrame:
    """``imdb.csv[.gz]`` as a frame, checked for its columns and sentiments.

    Raises:
        CorruptDataError: if the file is truncated or damaged, a column is missing or a
            sentiment is not negative/positive.
    """
    with reading(path, REFETCH):
        frame = pd.read_csv(path, keep_default_na=False, dtype={"review": str, "sentiment": str})
    missing = [c for c in COLUMNS if c not in frame.columns]
    bad = sorted(set(frame.get("sentiment", [])) - set(SENTIMENTS))
    if missing or bad:
        raise CorruptDataError(
            path,
            f"missing columns {missing}, unknown sentiments {bad[:5]} (expected columns "
            f"{','.join(COLUMNS)} with sentiment in {SENTIMENTS}): is it the project's "
            "imdb.csv.gz?",
            REFETCH,
        )
    return frame


class IMDb(TextMembershipDataModule):
    """IMDb reviews (Maas et al., ACL 2011): 50,000 reviews, negative (0) or positive (1).

    The pool is the official train split then the test split (25,000 each), or a
    class-stratified subset of them (``max_examples``). ``root`` holds ``imdb.csv.gz``;
    with ``download=True`` a missing one is built from ``aclImdb_v1.tar.gz`` (fetched
    into ``root``, or already there).

    Real properties: ``rating`` (the reviewer's 1..10 stars: 1-4 negative, 7-10
    positive) and ``extreme_rating`` (1 for ratings 1 or 10, else 0).

    Args:
        **kwargs: the arguments of :class:`TextMembershipDataModule`.
    """

    num_classes = 2
    filename = "imdb.csv.gz"
    archive_name = "aclImdb_v1.tar.gz"
    url = URL
    archive_md5: str | None = "7c2ac02c03563afcf9b574c7e56c153a"

    @property
    def csv_path(self) -> Path:
        """Where the reviews are looked for: ``<root>/imdb.csv.gz``."""
        return Path(self.root) / self.filename

    def ensure_csv(self) -> Path:
        """``imdb.csv.gz``, built from the archive (downloaded if allowed) when missing."""
        path, archive = self.csv_path, Path(self.root) / self.archive_name
        if path.is_file():
            return path
        if not (archive.is_file() or self.download):
            raise missing_file_error(
                path,
                self.url,
                hint=f"The download is saved as {archive} and converted to {path.name}.",
            )
        ensure_file(archive, self.url, download=True, md5=self.archive_md5)
        return write_imdb_csv(imdb_rows(archive), path)

    def load_texts(self) -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
        frame = read_imdb_csv(self.ensure_csv())
        labels = (frame["sentiment"] == "positive").to_numpy(np.int64)  # [N]
        rating = frame["rating"].to_numpy(np.int64)  # [N]
        properties = {
            "rating": rating,
            "extreme_rating": np.isin(rating, (1, 10)).astype(np.int64),
        }
        return frame["review"].tolist(), labels, properties
