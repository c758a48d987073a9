"""mia-bench fleet: skip, resume, and survive being killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mia_bench.store.artifacts import list_epochs, load_keep, load_signals
from mia_bench.store.groups import client_and_experiment, group_runs, scan_group
from mia_bench.store.leases import lease_holder
from mia_bench.store.runs import MlflowSettings
from mia_bench.study.fleet import parse_runs

FLEET = [
    sys.executable,
    "-m",
    "mia_bench",
    "fleet",
    "--runs",
    "0:3",
    "--group",
    "killed",
    "--data.num_runs=4",
    "--trainer.max_epochs=12",
    "--data.batch_size=16",
    "--model.net.init_args.hidden=[32]",
    "--signals.every_n_epochs=4",
]


def test_parse_runs_errors():
    assert parse_runs("0:16:4") == [0, 4, 8, 12]
    with pytest.raises(ValueError, match="not a run range"):
        parse_runs("a:b")


def _checkpoints(tmp: Path) -> list[Path]:
    root = tmp / "mlruns" / "checkpoints"
    return sorted(root.iterdir(), key=lambda p: p.stat().st_mtime) if root.exists() else []


def _kill_when_second_run_is_midway(tmp: Path) -> None:
    proc = subprocess.Popen(
        FLEET, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        dirs = _checkpoints(tmp)
        if len(dirs) == 2 and (dirs[1] / "epoch_002.ckpt").exists():
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the fleet ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    _wait_until_no_worker_holds_a_lease(tmp)  # workers die with the fleet (PR_SET_PDEATHSIG)


def _wait_until_no_worker_holds_a_lease(tmp: Path, timeout_s: float = 120) -> None:
    """The event that all workers are gone: no run of the group has a live lease holder."""
    client, exp_id = client_and_experiment(MlflowSettings())
    deadline = time.monotonic() + timeout_s
    while any(lease_holder(client, exp_id, "killed", i) for i in range(3)):
        assert time.monotonic() < deadline, "a worker outlived its killed fleet"
        time.sleep(0.05)


@pytest.mark.slow
def test_killed_fleet_resumes_without_training_twice(in_tmp):
    _kill_when_second_run_is_midway(in_tmp)
    settings = MlflowSettings()
    client, exp_id = client_and_experiment(settings)
    before = {i: runs[0] for i, runs in scan_group(client, exp_id, "killed").slots.items()}
    assert before[0].status == "FINISHED" and before[1].status == "RUNNING"
    assert not (Path(_checkpoints(in_tmp)[1]) / "epoch_011.ckpt").exists()
    first_history = client.get_metric_history(before[0].run_id, "train/acc")

    subprocess.run(FLEET, check=True, capture_output=True, timeout=600)

    after = group_runs(client, exp_id, "killed")
    all_runs = client.search_runs([exp_id], "tags.`mia.group` = 'killed'")
    assert [r.run_index for r in after] == [0, 1, 2] and len(all_runs) == 3
    assert all(r.status == "FINISHED" for r in after)
    assert [r.tags["mia.seed"] for r in after] == ["0", "1", "2"]  # runs differ in seed
    assert after[1].run_id == before[1].run_id, "run 1 must resume its own MLflow run"
    # run 0 was skipped: its history is untouched
    assert client.get_metric_history(after[0].run_id, "train/acc") == first_history
    for run in after:
        steps = [m.step for m in client.get_metric_history(run.run_id, "train/acc")]
        assert sorted(set(steps)) == list(range(12))
        assert list_epochs(run.artifact_dir) == [3, 7, 11]
        for epoch in (3, 7, 11):
            assert load_signals(run.artifact_dir, epoch).logits.shape == (1797, 1, 10)
        assert load_keep(run.artifact_dir).shape == (1797,)
        assert not list(run.artifact_dir.rglob("*.tmp")), "a partial write was left behind"
