"""Damaged dataset files: a cache is rebuilt, a source file is one error naming it.

Every file is generated small in its real format, then damaged the way a cut-short
download or copy leaves it.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from archives import write_tgz

from mia_bench.cli import main
from mia_bench.data import AGNews, IMDb, Location, Purchase100
from mia_bench.data.ag_news import URL as AG_URL
from mia_bench.data.download import CorruptDataError
from mia_bench.data.image_files import cached_pool, write_cache
from mia_bench.data.imdb import URL as IMDB_URL
from mia_bench.data.imdb import write_imdb_csv
from mia_bench.errors import UserError

CONFIGS = Path(__file__).resolve().parents[2] / "lightning_configs"
ROWS, SIZE = 400, 8
TABLE_ROWS = 50  # parsing Purchase100's 600 columns is the slow part


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _damaged_header(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:100] + b"\0" * 50 + data[150:])


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGES: list[Callable[[Path], None]] = [_truncate, _empty, _damaged_header, _flip_a_byte]


def _one_line_naming(err: pytest.ExceptionInfo, path: Path, *words: str) -> None:
    assert isinstance(err.value, UserError) and err.value.path == path
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message


# --- caches: rebuilt, never trusted ---------------------------------------------------
def _pool_arrays(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (ROWS, SIZE, SIZE, 3), dtype=np.uint8)  # [N, S, S, 3]
    return {"images": images, "labels": np.arange(ROWS) % 7}


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__)
def test_damaged_image_pool_cache_is_rebuilt(tmp_path, damage):
    path = tmp_path / "pool.npz"
    write_cache(path, _pool_arrays(0))
    damage(path)
    built = cached_pool(path, SIZE, lambda: _pool_arrays(1))
    np.testing.assert_array_equal(built["images"], _pool_arrays(1)["images"])
    again = cached_pool(path, SIZE, lambda: pytest.fail("the rebuilt cache was not read"))
    np.testing.assert_array_equal(again["labels"], _pool_arrays(1)["labels"])


def test_image_pool_cache_with_arrays_of_different_lengths_is_rebuilt(tmp_path):
    path = tmp_path / "pool.npz"
    write_cache(path, {**_pool_arrays(0), "labels": np.arange(ROWS - 1)})
    assert len(cached_pool(path, SIZE, lambda: _pool_arrays(1))["labels"]) == ROWS


def _purchase_archive(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    features = rng.integers(0, 2, size=(TABLE_ROWS, 600))
    labels = np.arange(TABLE_ROWS) % 100 + 1  # 1-based
    table = np.column_stack([labels, features])
    text = "\n".join(",".join(map(str, row)) for row in table) + "\n"
    write_tgz(folder / "dataset_purchase.tgz", {"dataset_purchase": text})
    return features, labels - 1


def _load_purchase_with_damaged_cache(folder: Path, damage: Callable[[Path], None]) -> None:
    features, labels = _purchase_archive(folder)
    _ = Purchase100(root=str(folder)).pool
    cache = folder / "dataset_purchase.npz"
    damage(cache)  # newer than the archive: it would be trusted by its date
    pool = Purchase100(root=str(folder)).pool
    np.testing.assert_array_equal(pool.inputs, features)
    np.testing.assert_array_equal(pool.labels, labels)
    with np.load(cache) as z:  # rewritten whole
        np.testing.assert_array_equal(z["features"], features)


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__)
def test_damaged_tabular_cache_is_rebuilt(tmp_path, damage):
    _load_purchase_with_damaged_cache(tmp_path, damage)


def test_tabular_cache_of_other_arrays_is_rebuilt_with_a_warning(tmp_path):
    def other_arrays(path: Path) -> None:
        np.savez_compressed(path, features=np.zeros((TABLE_ROWS, 599)), labels=np.zeros(1))

    with pytest.warns(UserWarning, match="not this data set's arrays"):
        _load_purchase_with_damaged_cache(tmp_path, other_arrays)


# --- source files: one error naming the file and how to fetch it again ---------------
def _ag_news_csv_gz(folder: Path) -> Path:
    text = io.StringIO()
    writer = csv.writer(text, quoting=csv.QUOTE_ALL)
    for n in range(ROWS):
        writer.writerow([n % 4 + 1, f"Title {n}", f"A description of item {n}, " * 5])
    path = folder / "test.csv.gz"
    path.write_bytes(gzip.compress(text.getvalue().encode()))
    return path


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__)
def test_damaged_ag_news_csv_gz_names_the_file_and_url(tmp_path, damage):
    path = _ag_news_csv_gz(tmp_path)
    assert len(AGNews(root=str(tmp_path), splits=["test"]).pool.labels) == ROWS
    damage(path)
    with pytest.raises(CorruptDataError) as err:
        _ = AGNews(root=str(tmp_path), splits=["test"]).pool
    _one_line_naming(err, path, AG_URL, "--data.download true")


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__)
def test_damaged_imdb_csv_gz_names_the_file_and_url(tmp_path, damage):
    rows = [
        (
            f"Review {n}: " + "words " * 30,
            ("negative", "positive")[n % 2],
            "train",
            n,
            1 + n % 2 * 9,
        )
        for n in range(ROWS)
    ]
    path = write_imdb_csv(rows, tmp_path / "imdb.csv.gz")
    damage(path)
    with pytest.raises(CorruptDataError) as err:
        _ = IMDb(root=str(tmp_path)).pool
    _one_line_naming(err, path, IMDB_URL, "--data.download true")


@pytest.mark.parametrize("damage", [_truncate, _empty], ids=lambda f: f.__name__)
def test_damaged_tabular_archive_names_the_file_and_url(tmp_path, damage):
    _purchase_archive(tmp_path)
    path = tmp_path / "dataset_purchase.tgz"
    damage(path)
    with pytest.raises(CorruptDataError) as err:
        _ = Purchase100(root=str(tmp_path)).pool
    _one_line_naming(err, path, Purchase100.url, "--data.download true")


def test_archive_failing_its_md5_is_a_one_line_error(tmp_path):
    path = tmp_path / "dataset_location.tgz"
    path.write_bytes(b"\x1f\x8b cut short")
    with pytest.raises(CorruptDataError) as err:
        _ = Location(root=str(tmp_path)).pool
    _one_line_naming(err, path, "md5", "--data.download true")


def test_fit_on_a_truncated_csv_gz_exits_with_one_line(tmp_path, monkeypatch, capsys):
    path = _ag_news_csv_gz(tmp_path)
    _truncate(path)
    monkeypatch.chdir(tmp_path)
    config = str(CONFIGS / "agnews_transformer.yaml")
    assert main(["fit", "-c", config, f"--data.root={tmp_path}", "--trainer.max_epochs=1"]) == 2
    err = capsys.readouterr().err
    assert f"mia-bench: error: {path}: is truncated or damaged" in err
    assert "Traceback" not in err and AG_URL in err
    assert not (tmp_path / "mlruns").exists()  # failed before any MLflow run was opened
