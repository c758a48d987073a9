"""Fleets beyond one machine: Ray tasks on a local two-node cluster, against an MLflow
tracking server on PostgreSQL whose artifacts are served over HTTP.

Every service runs on 127.0.0.1 or a unix socket and is stopped at the end
(:mod:`tests.services`). The audit runs from another folder with its own cache and no
access to the training folder (which is deleted first)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytest.importorskip("pgserver")
from mlflow.tracking import MlflowClient  # noqa: E402
from services import RAY_LOOPBACK_ENV, lease_pid, mlflow_server, postgres, ray_cluster  # noqa: E402

pytestmark = pytest.mark.slow

RECIPE = [
    "--data.num_runs=4",
    "--trainer.max_epochs=3",
    "--data.batch_size=16",
    "--model.net.init_args.hidden=[32]",
]
ATTACKS = "[loss, lira_offline, rmia_offline]"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> str:
    """An ``mlflow server`` on PostgreSQL, artifacts served from a folder of its own."""
    root = tmp_path_factory.mktemp("server")
    with postgres(root / "pg") as db, mlflow_server(db, root / "artifacts", root / "log") as uri:
        yield uri


@pytest.fixture(scope="module")
def ray_address() -> str:
    """A Ray head and one worker node, both on 127.0.0.1, one CPU each."""
    with ray_cluster(workers=1, cpus=1) as address:
        yield address


def _env(folder: Path, ray_address: str | None = None) -> dict[str, str]:
    env = os.environ | {"OMP_NUM_THREADS": "1", "MIA_BENCH_CACHE": str(folder / "cache")}
    if ray_address:
        env |= RAY_LOOPBACK_ENV | {"RAY_ADDRESS": ray_address}
    return env


def _mia(args: list[str], folder: Path, env: dict[str, str], **kw) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "mia_bench", *args],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def _done(proc: subprocess.Popen, timeout: float = 900) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def _fleet(group: str, runs: str, store: str, backend: str = "ray") -> list[str]:
    return ["fleet", "--backend", backend, "--runs", runs, "--group", group, *RECIPE,
            f"--mlflow.tracking_uri={store}"]  # fmt: skip


def _audit_numbers(folder: Path, group: str, store: str, env: dict[str, str]) -> dict:
    args = ["audit", "--group", group, "--targets", "4", "--attacks", ATTACKS,
            f"--mlflow.tracking_uri={store}", "--output", "audit.json"]  # fmt: skip
    _done(_mia(args, folder, env))
    doc = json.loads((folder / "audit.json").read_text())
    return {k: doc[k] for k in ("summary", "per_target") if k in doc} or doc["markdown"]


def _fit_runs(store: str, group: str) -> list:
    client = MlflowClient(store)
    found = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`mia.group` = '{group}'",
    )
    return [r for r in found if r.data.tags.get("mia.command", "fit") == "fit"]


def test_a_ray_fleet_on_a_server_audits_from_elsewhere_as_a_local_sqlite_fleet(
    server, ray_address, tmp_path
):
    train = tmp_path / "train"
    out = _done(_mia(_fleet("g", "0:4", server), train, _env(train, ray_address)))
    nodes = {line.split(" on ")[1].split(" (pid")[0] for line in out.splitlines()
             if ": finished in " in line}  # fmt: skip
    assert len(nodes) == 2, out  # both nodes of the cluster trained runs
    assert "runs/h, ETA" in out
    logs = sorted((train / "mlruns" / "fleet" / "g").glob("run_*.log"))
    assert len(logs) == 4 and all("Seed set to" in p.read_text() for p in logs)
    shutil.rmtree(train)  # the audit has the server only

    elsewhere = tmp_path / "audit"
    remote = _audit_numbers(elsewhere, "g", server, _env(elsewhere))
    cached = sorted(p.name for p in (elsewhere / "cache").rglob("*.npz"))
    assert len(cached) == 4 * 2  # each run's last epoch: signals and statistics, once
    store = [f"--mlflow.tracking_uri={server}"]
    _done(
        _mia(
            ["record", "--group", "g", "--epoch", "2", "--layers", "[embedding]", *store],
            elsewhere,
            _env(elsewhere),
        )
    )  # fmt: skip  (from the runs' stored checkpoints)
    client = MlflowClient(server)
    for run in _fit_runs(server, "g"):
        stored = [f.path for f in client.list_artifacts(run.info.run_id, "embeddings/epoch_002")]
        assert stored == ["embeddings/epoch_002/embedding.npy"]
    _done(_mia(["compare", "--groups", "[g]", "--output_dir", "cmp", *store], elsewhere,
               _env(elsewhere)))  # fmt: skip
    import pandas as pd

    assert list(pd.read_csv(elsewhere / "cmp" / "compare.csv")["group"]) == ["g"]

    local = tmp_path / "local"
    sqlite = "sqlite:///mlruns/mlflow.db"
    _done(_mia(_fleet("g", "0:4", sqlite, backend="local"), local, _env(local)))
    assert _audit_numbers(local, "g", sqlite, _env(local)) == remote


def _checkpoints_of(folder: Path) -> list[Path]:
    return sorted((folder / "mlruns" / "checkpoints").glob("*/epoch_*.ckpt"))


def test_a_killed_ray_worker_has_its_run_resumed_not_restarted(server, ray_address, tmp_path):
    train = tmp_path / "train"
    args = _fleet("killed", "0:1", server)
    args[args.index("--trainer.max_epochs=3")] = "--trainer.max_epochs=12"
    fleet = _mia(args, train, _env(train, ray_address))
    deadline = time.monotonic() + 600
    while not [p for p in _checkpoints_of(train) if p.name == "epoch_003.ckpt"]:
        assert fleet.poll() is None and time.monotonic() < deadline, "no epoch 3 checkpoint"
        time.sleep(0.05)
    pid = lease_pid(server, "killed", 0)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    out = _done(fleet)
    assert "run 0: retrying (attempt 2, resumes)" in out, out
    assert "run 0: finished in" in out
    runs = _fit_runs(server, "killed")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # one MLflow run, resumed
    history = MlflowClient(server).get_metric_history(runs[0].info.run_id, "train/acc")
    assert sorted(m.step for m in history) == list(range(12))  # one value per epoch
    log = next((train / "mlruns" / "fleet" / "killed").glob("run_000.*.log")).read_text()
    assert "Restored all states from the checkpoint" in log  # resumed, not restarted


def test_two_ray_fleets_on_one_group_train_every_run_once(server, ray_address, tmp_path):
    env = _env(tmp_path, ray_address)
    fleets = [_mia(_fleet("twice", "0:4", server), tmp_path / f"f{i}", env) for i in (0, 1)]
    outs = [_done(f) for f in fleets]
    runs = _fit_runs(server, "twice")
    assert sorted(int(r.data.tags["mia.run_index"]) for r in runs) == [0, 1, 2, 3]
    assert all(r.info.status == "FINISHED" for r in runs)
    trained = [line for out in outs for line in out.splitlines() if ": finished in " in line]
    assert sorted(int(line.split("run ")[1].split(":")[0]) for line in trained) == [0, 1, 2, 3]
