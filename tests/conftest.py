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


# Two recipes of 4 tiny digits MLPs each (2 epochs), audited leave-one-out on 3 targets.
AUDITED_GROUPS = {"plain": [], "dropout": ["--model.net.init_args.dropout=0.5"]}
AUDITED_ATTACKS = "loss,lira_online"
TINY_GROUP = [
    "--data.num_runs=4",
    "--trainer.max_epochs=2",
    "--model.net.init_args.hidden=[32]",
    "--data.batch_size=128",
]


@pytest.fixture(scope="session")
def audited_store(tmp_path_factory) -> Path:
    """A folder whose ``mlruns/`` holds the audited groups of ``AUDITED_GROUPS``.

    Built once per session (tests of compare and of the notebook share it); the audit
    documents are ``<folder>/<group>.json``.
    """
    from mia_bench.cli import main

    folder = tmp_path_factory.mktemp("audited")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        for group, extra in AUDITED_GROUPS.items():
            fleet = ["fleet", "--runs", "0:4", "--workers", "2", "--group", group]
            assert main([*fleet, *TINY_GROUP, *extra]) == 0
            audit = ["audit", "--group", group, "--targets", "3", "--output", f"{group}.json"]
            assert main([*audit, "--attacks", AUDITED_ATTACKS]) == 0
    return folder
