"""Shared loader of the MIA authors' tabular archives (Location, Purchase100, Texas100).

Shokri et al. (S&P 2017) distribute each data set as a ``.tgz`` of headerless CSV
files with binary features and 1-based class labels. A subclass names its archive and
parses it with :func:`read_csv_member` / :func:`read_labeled_csv`; this base finds or
downloads the archive and caches the parsed arrays as ``<archive stem>.npz`` next to it
when that folder is writable (parsing the CSV is the slow part).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from mia_bench.data.download import (
    ensure_file,
    is_writable_folder,
    read_npz_cache,
    reading,
    refetch_advice,
    tar_member,
)
from mia_bench.data.membership import MembershipDataModule, Pool


def read_csv_member(archive: Path, member: str) -> np.ndarray:
    """A headerless numeric CSV inside a ``.tgz`` as ``float32[rows, cols]``.

    Quoted numbers (Location writes its labels as ``"13"``) are read as numbers.
    """
    with tar_member(archive, member) as f:
        frame = pd.read_csv(f, header=None, dtype=np.float32)
    return frame.to_numpy()


def shift_labels(raw: np.ndarray, num_classes: int, source: str) -> np.ndarray:
    """1-based labels ``1..num_classes`` as ``int64`` labels ``0..num_classes-1``.

    Raises:
        ValueError: if a label is not a whole number in ``1..num_classes``.

    >>> shift_labels(np.array([1.0, 3.0]), 3, "x").tolist()
    [0, 2]
    """
    labels = raw.astype(np.int64)
    if not np.array_equal(labels, raw) or labels.min() < 1 or labels.max() > num_classes:
        raise ValueError(
            f"{source}: labels must be whole numbers in 1..{num_classes}, found values in "
            f"[{raw.min():g}, {raw.max():g}]. Is it the right file?"
        )
    return labels - 1


def read_labeled_csv(archive: Path, member: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A CSV whose column 0 is a 1-based label and the rest features.

    Returns:
        ``(features float32[N, D], labels int64[N] in 0..num_classes-1)``.
    """
    table = read_csv_member(archive, member)  # [N, 1 + D]
    labels = shift_labels(table[:, 0], num_classes, f"{archive}:{member}")
    return np.ascontiguousarray(table[:, 1:]), labels


class TabularMembershipDataModule(MembershipDataModule):
    """Base of the data sets distributed as one ``.tgz`` archive of CSV files.

    Subclasses set ``archive_name``, ``url`` (canonical download), optionally ``md5``
    (of the archive), and implement :meth:`parse`. ``root`` is the folder holding
    the archive.
    """

    archive_name: str = ""
    url: str = ""
    md5: str | None = None

    @property
    def archive_path(self) -> Path:
        """Where the archive is looked for: ``<root>/<archive_name>``."""
        return Path(self.root) / self.archive_name

    @property
    def cache_path(self) -> Path:
        """Parsed arrays cached next to the archive."""
        return self.archive_path.with_name(self.archive_name.split(".")[0] + ".npz")

    def parse(self, archive: Path) -> tuple[np.ndarray, np.ndarray]:
        """Read ``(features float32[N, D], labels int64[N])`` from the archive."""
        raise NotImplementedError

    def load_pool(self) -> Pool:
        archive = ensure_file(self.archive_path, self.url, self.download, self.md5)
        arrays = self._read_cache(archive)
        if arrays is None:
            with reading(archive, refetch_advice(self.url)):
                arrays = self.parse(archive)
            self._write_cache(archive, *arrays)
        features, labels = arrays
        self._check_shapes(features, labels)
        return Pool(inputs=features, labels=labels)

    def _check_shapes(self, features: np.ndarray, labels: np.ndarray) -> None:
        if features.shape[1:] != self.input_shape or len(features) != len(labels):
            raise ValueError(
                f"{self.archive_path}: parsed features {features.shape} and labels "
                f"{labels.shape}, expected features [N, {self.input_shape}]. Is it the "
                f"archive from {self.url}?"
            )

    def _read_cache(self, archive: Path) -> tuple[np.ndarray, np.ndarray] | None:
        """The cached arrays; None (rebuild) if absent, older than the archive, or damaged."""
        cache = self.cache_path
        if not cache.is_file() or cache.stat().st_mtime < archive.stat().st_mtime:
            return None
        arrays = read_npz_cache(cache)  # None (logged) when it does not read whole
        if arrays is None:
            return None
        features, labels = arrays.get("features"), arrays.get("labels")
        if features is None or labels is None or features.shape != (len(labels), *self.input_shape):
            warnings.warn(
                f"ignoring {cache}: not this data set's arrays; rebuilding it", stacklevel=2
            )
            return None
        return features.astype(np.float32), labels.astype(np.int64)

    def _write_cache(self, archive: Path, features: np.ndarray, labels: np.ndarray) -> None:
        if not is_writable_folder(archive.parent):
            return
        compact = features.astype(np.uint8)  # binary features: 4x smaller on disk
        stored = compact if np.array_equal(compact, features) else features
        tmp = self.cache_path.with_name(self.cache_path.name + ".tmp")
        try:
            with open(tmp, "wb") as f:  # a file object: savez adds no suffix
                np.savez_compressed(f, features=stored, labels=labels)
            os.replace(tmp, self.cache_path)
        except OSError as err:  # a cache is an optimisation, never a failure
            tmp.unlink(missing_ok=True)
            warnings.warn(f"could not cache {self.cache_path}: {err}", stacklevel=2)
