"""Per-epoch statistics files, float16 logits, and a group's statistics as one memmap."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mia_bench.errors import UserError
from mia_bench.statistics import RECORDED, compute_statistics
from mia_bench.store.artifacts import (
    EpochSignals,
    as_stored,
    load_signals,
    save_signals,
    signals_path,
    stats_path,
)
from mia_bench.store.group_stats import load_statistics, stack_statistics


def _signals(seed: int, n: int = 50, views: int = 3, classes: int = 4) -> EpochSignals:
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(n, views, classes)) * 3).astype(np.float32)
    return EpochSignals(2, logits, rng.integers(0, classes, size=n))


def _run_dir(root: Path, i: int) -> Path:
    return root / "artifacts" / f"{i:032x}" / "artifacts"


def test_saved_epoch_has_the_statistics_of_its_logits(tmp_path) -> None:
    signals = _signals(0)
    save_signals(tmp_path, signals)
    loaded = load_signals(tmp_path, 2)
    want = compute_statistics(signals.logits, signals.labels)
    assert set(loaded.stats) == set(RECORDED)
    for name in RECORDED:
        np.testing.assert_array_equal(loaded.stats[name], want[name])
        assert loaded.stats[name].dtype == np.float32
    assert stats_path(tmp_path, 2).is_file()


def test_float16_logits_keep_float32_statistics(tmp_path) -> None:
    signals = _signals(1, n=2000)
    stored = as_stored(signals, "float16")
    save_signals(tmp_path / "half", stored)
    save_signals(tmp_path / "full", signals)
    half, full = load_signals(tmp_path / "half", 2), load_signals(tmp_path / "full", 2)
    assert half.logits.dtype == np.float16
    np.testing.assert_allclose(half.logits, full.logits, rtol=1e-3, atol=1e-3)
    for name in RECORDED:  # statistics come from the float32 logits, before the cast
        np.testing.assert_array_equal(half.stats[name], full.stats[name])
    half_size = signals_path(tmp_path / "half", 2).stat().st_size
    assert half_size < 0.7 * signals_path(tmp_path / "full", 2).stat().st_size


def test_float16_out_of_range_keeps_float32(tmp_path) -> None:
    signals = _signals(2)
    big = EpochSignals(2, signals.logits * 1e5, signals.labels)
    with pytest.warns(UserWarning, match="beyond float16"):
        stored = as_stored(big, "float16")
    assert stored.logits.dtype == np.float32
    with pytest.raises(ValueError, match="logits_dtype must be one of"):
        as_stored(big, "int8")


def test_runs_recorded_before_statistics_get_them_from_their_logits(tmp_path) -> None:
    signals = _signals(3)
    save_signals(tmp_path, signals)
    stats_path(tmp_path, 2).unlink()  # as a run recorded before statistics were stored
    got = load_statistics(tmp_path, 2, ["scaled_logit", "log_p_t4"])
    want = compute_statistics(signals.logits, signals.labels, ["scaled_logit", "log_p_t4"])
    for name, values in want.items():
        np.testing.assert_array_equal(got[name], values)


def test_group_statistics_stack_as_one_memmap_and_leave_no_files(tmp_path) -> None:
    runs = [_signals(i) for i in range(5)]
    sources = []
    for i, signals in enumerate(runs):
        save_signals(_run_dir(tmp_path, i), signals)
        sources.append((_run_dir(tmp_path, i), 2))
    arrays, kept = stack_statistics(sources, ["scaled_logit", "log_p"])
    assert kept == [0, 1, 2, 3, 4]
    assert isinstance(arrays["log_p"], np.memmap) and arrays["log_p"].shape == (5, 50, 3)
    for i, signals in enumerate(runs):
        want = compute_statistics(signals.logits, signals.labels, ["log_p"])["log_p"]
        np.testing.assert_array_equal(arrays["log_p"][i], want)
    assert not list((tmp_path / "artifacts").glob(".mia-group-stats.*"))  # unlinked at once


@pytest.mark.parametrize("damaged", [stats_path, signals_path])
def test_damaged_run_is_left_out_or_stops_the_stacking(tmp_path, damaged) -> None:
    # a cut-short signals file is reported even though the audit reads the statistics
    sources = []
    for i in range(3):
        save_signals(_run_dir(tmp_path, i), _signals(i))
        sources.append((_run_dir(tmp_path, i), 2))
    path = damaged(_run_dir(tmp_path, 1), 2)
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.raises(UserError, match=f"{path}.*cannot be read"):
        stack_statistics(sources, ["log_p"])
    seen = []
    arrays, kept = stack_statistics(sources, ["log_p"], on_corrupt=lambda i, e: seen.append(i))
    assert kept == [0, 2] and seen == [1] and arrays["log_p"].shape == (2, 50, 3)


def test_scratch_left_by_a_killed_stacking_is_removed(tmp_path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    host = socket.gethostname()
    abandoned = tmp_path / "artifacts" / f".mia-group-stats.{host}-{dead.stdout.strip()}-x"
    abandoned.mkdir(parents=True)
    (abandoned / "log_p").write_bytes(b"\0" * 64)
    save_signals(_run_dir(tmp_path, 0), _signals(0))
    stack_statistics([(_run_dir(tmp_path, 0), 2)], ["log_p"])
    assert not abandoned.exists()


def test_recorder_refuses_an_unknown_logits_dtype() -> None:
    from mia_bench.callbacks.signal_recorder import SignalRecorder

    with pytest.raises(ValueError, match="logits_dtype must be one of"):
        SignalRecorder(logits_dtype="bfloat16")
    assert SignalRecorder(logits_dtype="float16").logits_dtype == "float16"
