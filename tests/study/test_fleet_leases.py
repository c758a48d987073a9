"""A fleet leaves a run whose lease another live process holds to it, and skips a finished one."""

from __future__ import annotations

import os
import socket

import numpy as np
from mlflow.tracking import MlflowClient

from mia_bench.store.artifacts import EpochSignals, local_artifact_dir, save_keep, save_signals
from mia_bench.store.leases import acquire_lease
from mia_bench.store.runs import MlflowSettings, experiment_id, resolve_tracking_uri
from mia_bench.study.fleet import Fleet, Job


def test_fleet_leaves_held_runs_and_skips_finished_ones(in_tmp, capsys):
    settings = MlflowSettings()
    client = MlflowClient(resolve_tracking_uri(settings.tracking_uri))
    exp_id = experiment_id(client, settings)
    lease = acquire_lease(client, exp_id, "g", 0, heartbeat_s=0)
    tags = {"mia.group": "g", "mia.run_index": "1", "mia.num_runs": "2"}
    done = client.create_run(exp_id, tags=tags | {"mia.recorded_epochs": "0"})
    folder = local_artifact_dir(done.info.artifact_uri)  # a run that counts for the group
    save_keep(folder, np.ones(4, dtype=bool))
    save_signals(folder, EpochSignals(0, np.zeros((4, 1, 2), np.float32), np.zeros(4, int)))
    client.set_terminated(done.info.run_id, "FINISHED")
    fleet = Fleet([], "g", 2, in_tmp / "logs", settings)
    try:
        assert fleet.run([Job(0, "fresh"), Job(1, "resume")]) == 0
    finally:
        lease.release()
    out = capsys.readouterr().out
    assert f"run 0: being trained by {lease.holder}, left to it" in out
    assert "run 1: finished by another process meanwhile, skipped" in out
    assert fleet.left == [0] and fleet.done == [1] and not fleet.failed
    assert not (in_tmp / "logs").exists(), "no worker was started"


def test_worker_logs_are_per_fleet_process(tmp_path):
    log = Fleet([], "g", 1, tmp_path).log_path(3)
    assert log.parent == tmp_path
    assert log.name == f"run_003.{socket.gethostname()}-{os.getpid()}.log"
