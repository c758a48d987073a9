"""Location on the real offline archive; Purchase100 and Texas100 on generated archives."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from archives import write_tgz

from mia_bench.data import Location, Purchase100, Texas100

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
ROWS = 50


def fake_table(num_features: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    features = rng.integers(0, 2, size=(ROWS, num_features))
    labels = np.arange(ROWS) % num_classes + 1  # 1-based, covers 1 and num_classes
    labels[-1] = num_classes
    return features, labels


def csv_text(table: np.ndarray) -> str:
    return "\n".join(",".join(map(str, row)) for row in table) + "\n"


def test_location_real_archive(tmp_path: Path) -> None:
    archive = SHARED_DATA / "location" / "dataset_location.tgz"
    if not archive.is_file():
        pytest.skip(f"offline copy {archive} absent (../shared/data next to the repo)")
    shutil.copy(archive, tmp_path)  # keep the shared folder free of our cache
    pool = Location(root=str(tmp_path)).pool
    assert pool.inputs.shape == (5010, 446) and pool.inputs.dtype == np.float32
    assert set(np.unique(pool.inputs)) == {0.0, 1.0}
    assert pool.labels.dtype == np.int64
    np.testing.assert_array_equal(np.unique(pool.labels), np.arange(30))


def test_purchase100_generated_archive(tmp_path: Path) -> None:
    features, labels = fake_table(600, 100)
    table = np.column_stack([labels, features])
    write_tgz(tmp_path / "dataset_purchase.tgz", {"dataset_purchase": csv_text(table)})
    pool = Purchase100(root=str(tmp_path)).pool
    assert pool.inputs.shape == (ROWS, 600) and pool.inputs.dtype == np.float32
    np.testing.assert_array_equal(pool.inputs, features)
    np.testing.assert_array_equal(pool.labels, labels - 1)


def test_texas100_generated_archive(tmp_path: Path) -> None:
    features, labels = fake_table(6169, 100)
    members = {"texas/100/feats": csv_text(features), "texas/100/labels": csv_text(labels[:, None])}
    write_tgz(tmp_path / "dataset_texas.tgz", members)
    pool = Texas100(root=str(tmp_path)).pool
    assert pool.inputs.shape == (ROWS, 6169) and pool.inputs.dtype == np.float32
    np.testing.assert_array_equal(pool.inputs, features)
    np.testing.assert_array_equal(pool.labels, labels - 1)


def test_parsed_arrays_are_cached_next_to_a_writable_archive(tmp_path: Path) -> None:
    features, labels = fake_table(600, 100)
    table = np.column_stack([labels, features])
    write_tgz(tmp_path / "dataset_purchase.tgz", {"dataset_purchase": csv_text(table)})
    first = Purchase100(root=str(tmp_path)).pool
    assert (tmp_path / "dataset_purchase.npz").is_file()
    second = Purchase100(root=str(tmp_path)).pool
    np.testing.assert_array_equal(second.inputs, first.inputs)
    assert second.inputs.dtype == np.float32 and second.labels.dtype == np.int64


def test_no_cache_in_a_read_only_folder(tmp_path: Path) -> None:
    features, labels = fake_table(600, 100)
    table = np.column_stack([labels, features])
    write_tgz(tmp_path / "dataset_purchase.tgz", {"dataset_purchase": csv_text(table)})
    tmp_path.chmod(0o555)
    try:
        assert len(Purchase100(root=str(tmp_path)).pool.labels) == ROWS
        assert not (tmp_path / "dataset_purchase.npz").exists()
    finally:
        tmp_path.chmod(0o755)


def test_out_of_range_labels_are_rejected(tmp_path: Path) -> None:
    features, labels = fake_table(600, 100)
    table = np.column_stack([labels - 1, features])  # 0-based: not the archive's format
    write_tgz(tmp_path / "dataset_purchase.tgz", {"dataset_purchase": csv_text(table)})
    with pytest.raises(ValueError, match="1..100"):
        _ = Purchase100(root=str(tmp_path)).pool


def test_wrong_feature_count_is_rejected(tmp_path: Path) -> None:
    features, labels = fake_table(7, 100)
    table = np.column_stack([labels, features])
    write_tgz(tmp_path / "dataset_purchase.tgz", {"dataset_purchase": csv_text(table)})
    with pytest.raises(ValueError, match="expected features"):
        _ = Purchase100(root=str(tmp_path)).pool
