"""Shared fixtures: where the offline data lives, and small helpers."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()
# test-only sitecustomize modules for subprocesses (kill points, host-lookup log)
collect_ignore_glob = ["netlog/*", "store/killpoints/*"]
# the --help cache of fits (mia_bench.help_cache) goes to a folder of this session, not ~/.cache
os.environ.setdefault("MIA_BENCH_CACHE", tempfile.mkdtemp(prefix="mia-bench-cache-"))


def shared_file(relative: str) -> Path:
    """Path of a file in ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"offline data not found at {path} (needs ../shared/data beside the repo)")
    return path


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Run the test inside an empty folder (mlruns/ lands there)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
