"""``mia-bench fleet --backend submitit`` with submitit's local executor: the SLURM code
path without SLURM; a killed job is submitted again and resumes its run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("submitit")
from mlflow.tracking import MlflowClient  # noqa: E402
from services import lease_pid  # noqa: E402

pytestmark = pytest.mark.slow

FLEET = [sys.executable, "-m", "mia_bench", "fleet", "--backend", "submitit",
         "--submitit.cluster", "local", "--group", "slurm", "--data.num_runs=4",
         "--data.batch_size=16", "--model.net.init_args.hidden=[32]"]  # fmt: skip


def _fleet(tmp: Path, *args: str) -> subprocess.Popen:
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.Popen([*FLEET, *args], cwd=tmp, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-4000:]
    return out


def _runs(tmp: Path) -> list:
    client = MlflowClient(f"sqlite:///{tmp}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("mia-bench")
    return client.search_runs([exp.experiment_id], "tags.`mia.group` = 'slurm'")


def test_a_submitit_fleet_trains_resumes_a_killed_job_and_skips_what_is_done(tmp_path):
    fleet = _fleet(tmp_path, "--runs", "0:2", "--workers", "1", "--trainer.max_epochs=10")
    deadline = time.monotonic() + 600
    checkpoints = tmp_path / "mlruns" / "checkpoints"
    while not list(checkpoints.glob("*/epoch_002.ckpt")):
        assert fleet.poll() is None and time.monotonic() < deadline, "no epoch 2 checkpoint"
        time.sleep(0.05)
    pid = lease_pid(f"sqlite:///{tmp_path}/mlruns/mlflow.db", "slurm", 0)
    assert pid is not None and pid != fleet.pid  # the job's own process trains the run
    os.kill(pid, signal.SIGKILL)
    out = _finish(fleet)
    assert "submitted again (attempt 2, resumes)" in out, out
    assert "run 0: finished in" in out and "run 1: finished in" in out

    runs = _runs(tmp_path)
    assert sorted(int(r.data.tags["mia.run_index"]) for r in runs) == [0, 1]
    assert all(r.info.status == "FINISHED" for r in runs)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    for run in runs:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/acc")]
        assert sorted(steps) == list(range(10))
    log = next((tmp_path / "mlruns" / "fleet" / "slurm").glob("run_000.*.log")).read_text()
    assert "Restored all states from the checkpoint" in log

    again = _finish(_fleet(tmp_path, "--runs", "0:2", "--trainer.max_epochs=10"))
    assert again.count("already finished, skipped") == 2
