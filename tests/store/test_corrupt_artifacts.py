"""A damaged or missing run artifact is one error that names its file and its run.

Each damage is made on real artifacts written by :mod:`mia_bench.store.artifacts`, in
MLflow's layout ``<location>/<run_id>/artifacts/``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mia_bench.audit.checkpoint import load_keep_file
from mia_bench.errors import UserError
from mia_bench.store.artifacts import (
    CorruptArtifactError,
    EpochSignals,
    embedding_path,
    load_keep,
    load_signals,
    save_keep,
    save_signals,
    signals_path,
)

RUN_ID = "0123456789abcdef0123456789abcdef"
N = 40


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """One run's artifacts: keep row, and epoch 0 with the ``embedding`` layer."""
    folder = tmp_path / "artifacts" / RUN_ID / "artifacts"
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(N, 2, 10)).astype(np.float32)  # [N, A, C]
    embeddings = {"embedding": rng.normal(size=(N, 8)).astype(np.float32)}  # [N, D]
    save_signals(folder, EpochSignals(0, logits, np.arange(N) % 10, embeddings))
    save_keep(folder, np.arange(N) % 2 == 0)
    return folder


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(np.random.default_rng(1).bytes(300))


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the array data: only the zip CRC can tell
    path.write_bytes(bytes(data))


def _damaged_header(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:100] + b"\0" * 50 + data[150:])


NPY_DAMAGES: list[Callable[[Path], None]] = [_truncate, _garbage, _empty, _damaged_header]
NPZ_DAMAGES = [*NPY_DAMAGES, _flip_a_byte]  # a bare .npy has no checksum to catch a flip


def _assert_names(err: pytest.ExceptionInfo, path: Path) -> None:
    assert isinstance(err.value, UserError)
    assert err.value.path == path
    assert err.value.run == RUN_ID
    message = str(err.value)
    assert str(path) in message and RUN_ID in message and "\n" not in message


@pytest.mark.parametrize("damage", NPZ_DAMAGES, ids=lambda f: f.__name__)
def test_damaged_signals_name_the_file_and_run(run_dir, damage):
    path = signals_path(run_dir, 0)
    damage(path)
    with pytest.raises(CorruptArtifactError) as err:
        load_signals(run_dir, 0)
    _assert_names(err, path)


def test_signals_without_labels_or_of_wrong_shape_are_refused(run_dir):
    path = signals_path(run_dir, 0)
    np.savez(path, logits=np.zeros((N, 2, 10), np.float32))
    with pytest.raises(CorruptArtifactError, match="labels"):
        load_signals(run_dir, 0)
    np.savez(path, logits=np.zeros((N, 10), np.float32), labels=np.zeros(N, np.int64))
    with pytest.raises(CorruptArtifactError, match=r"not \[N, A, C\]"):
        load_signals(run_dir, 0)


@pytest.mark.parametrize("damage", NPY_DAMAGES, ids=lambda f: f.__name__)
def test_damaged_keep_row_names_the_file_and_run(run_dir, damage):
    path = run_dir / "keep.npy"
    damage(path)
    with pytest.raises(CorruptArtifactError) as err:
        load_keep(run_dir)
    _assert_names(err, path)


def test_keep_row_of_another_type_or_missing_is_refused(run_dir):
    path = run_dir / "keep.npy"
    np.save(path, np.ones(N, dtype=np.int64))
    with pytest.raises(CorruptArtifactError, match=r"int64\[40\], not bool\[N\]"):
        load_keep(run_dir)
    path.unlink()
    with pytest.raises(CorruptArtifactError, match="missing") as err:
        load_keep(run_dir)
    _assert_names(err, path)


def test_missing_embeddings_say_which_layers_there_are_and_how_to_record(run_dir):
    path = embedding_path(run_dir, 0, "fc0")
    with pytest.raises(CorruptArtifactError) as err:
        load_signals(run_dir, 0, ["fc0"])
    _assert_names(err, path)
    assert "recorded layers: ['embedding']" in str(err.value)
    assert "mia-bench record" in str(err.value)


@pytest.mark.parametrize("damage", NPY_DAMAGES, ids=lambda f: f.__name__)
def test_damaged_embeddings_name_the_file_and_run(run_dir, damage):
    path = embedding_path(run_dir, 0, "embedding")
    damage(path)
    with pytest.raises(CorruptArtifactError) as err:
        load_signals(run_dir, 0, ["embedding"])
    _assert_names(err, path)


def test_embeddings_of_another_pool_size_are_refused(run_dir):
    np.save(embedding_path(run_dir, 0, "embedding"), np.zeros((N - 1, 8), np.float32))
    with pytest.raises(CorruptArtifactError, match=r"not \[40, D\]"):
        load_signals(run_dir, 0, ["embedding"])


def test_whole_artifacts_still_load(run_dir):
    signals = load_signals(run_dir, 0, ["embedding"])
    assert signals.logits.shape == (N, 2, 10) and signals.embeddings["embedding"].shape == (N, 8)
    assert load_keep(run_dir).sum() == N // 2


def test_a_garbage_keep_file_given_to_a_checkpoint_audit_is_named(tmp_path):
    path = tmp_path / "keep.npy"
    _garbage(path)
    with pytest.raises(CorruptArtifactError) as err:
        load_keep_file(path, N)
    assert err.value.path == path and err.value.run is None
    assert str(path) in str(err.value)
