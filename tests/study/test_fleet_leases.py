"""A fleet leaves a run whose lease another live process holds to it, and skips a finished one."""

from __future__ import annotations

import os
import socket

from mia_bench.store.runs import MlflowSettings
from mia_bench.study.fleet import Fleet, Job


def test_fleet_leaves_held_runs_and_skips_finished_ones(held_and_finished, in_tmp, capsys):
    _, _, lease = held_and_finished
    fleet = Fleet([], "g", 2, in_tmp / "logs", MlflowSettings())
    assert fleet.run([Job(0, "fresh"), Job(1, "resume")]) == 0
    out = capsys.readouterr().out
    assert f"run 0: being trained by {lease.holder}, left to it" in out
    assert "run 1: finished by another process meanwhile, skipped" in out
    assert fleet.left == [0] and fleet.done == [1] and not fleet.failed
    assert not (in_tmp / "logs").exists(), "no worker was started"


def test_worker_logs_are_per_fleet_process(tmp_path):
    log = Fleet([], "g", 1, tmp_path).log_path(3)
    assert log.parent == tmp_path
    assert log.name == f"run_003.{socket.gethostname()}-{os.getpid()}.log"
