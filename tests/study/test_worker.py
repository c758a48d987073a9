"""Fleet workers: one process trains run after run, and a failure poisons nothing."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np

from mia_bench.store.artifacts import load_signals
from mia_bench.store.groups import client_and_experiment, group_runs
from mia_bench.store.runs import MlflowSettings
from mia_bench.study.fleet import Fleet, Job
from mia_bench.study.worker import serve

SMALL = ["--data.num_runs=4", "--trainer.max_epochs=2", "--model.net.init_args.hidden=[16]"]


def _job(run_index: int, group: str, log, *extra: str) -> str:
    args = [*SMALL, f"--group={group}", f"--data.run_index={run_index}", *extra]
    args += ["--trainer.enable_progress_bar=false", "--signals.progress=false"]
    return json.dumps({"run_index": run_index, "args": args, "log": str(log)}) + "\n"


def test_one_worker_trains_runs_in_turn_and_a_failed_run_poisons_nothing(in_tmp):
    logs = in_tmp / "logs"
    jobs = _job(0, "first", logs / "a.log")
    jobs += _job(1, "first", logs / "b.log", "--trainer.max_epochs=0.5")  # refused: 2
    jobs += _job(2, "first", logs / "c.log", "--model.net.init_args.hidden=[-3]")  # crashes
    jobs += _job(0, "second", logs / "d.log")  # run 0 again, in another group
    answers = io.StringIO()
    serve(io.StringIO(jobs), answers)

    statuses = [json.loads(line)["status"] for line in answers.getvalue().splitlines()]
    assert statuses[0] == 0 and statuses[1] == 2 and statuses[2] == 1 and statuses[3] == 0
    assert "max_epochs" in (logs / "b.log").read_text()
    # a run's log has a line per epoch and its result (no progress bar in a log)
    log = (logs / "a.log").read_text()
    assert "run 0 of group 'first', epoch 0/1: train/acc" in log and "epoch 1/1" in log
    assert "membership inference, run 0 of group 'first', epoch 1" in log
    assert "Traceback" in (logs / "c.log").read_text()
    # the run trained after the failures is the run trained first: same seed, init, batches
    client, exp_id = client_and_experiment(MlflowSettings())
    first, second = (group_runs(client, exp_id, g)[0] for g in ("first", "second"))
    assert first.run_id != second.run_id
    for epoch in (0, 1):
        a, b = (load_signals(r.artifact_dir, epoch).logits for r in (first, second))
        np.testing.assert_array_equal(a, b)
    steps = [m.step for m in client.get_metric_history(second.run_id, "train/acc")]
    assert steps == [0, 1]


def test_a_worker_that_dies_fails_its_run_and_a_new_worker_takes_the_next(in_tmp, capsys):
    fleet = Fleet(
        SMALL + ["--trainer.max_epochs=30"], "crash", 1, in_tmp / "logs", MlflowSettings()
    )
    jobs = [Job(0, "fresh"), Job(1, "fresh")]
    ended: list[int] = []
    thread = threading.Thread(target=lambda: ended.append(fleet.run(jobs)))
    thread.start()
    deadline = time.monotonic() + 300
    while not (in_tmp / "logs").exists() or 0 not in fleet.running:
        assert time.monotonic() < deadline and thread.is_alive(), "run 0 never started"
        time.sleep(0.05)
    os.kill(fleet.running[0].proc.pid, signal.SIGKILL)
    thread.join(timeout=600)
    assert ended == [1]
    assert fleet.failed == [0] and fleet.done == [1]
    assert fleet.started_workers == 2
    assert "worker 0 died (exit -9)" in capsys.readouterr().out


def test_gpus_are_the_visible_ones_or_the_drivers_and_workers_are_dealt_to_them(
    tmp_path, monkeypatch
):
    from mia_bench.study.fleet import gpu_slots, worker_env

    smi = tmp_path / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\necho 'GPU 0: NVIDIA H100 (UUID: a)'\necho 'GPU 1: NVIDIA H100 (UUID: b)'\n"
    )
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpu_slots("auto") == ["0", "1"]
    assert gpu_slots("none") is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    gpus = gpu_slots("auto")
    assert gpus == ["3", "5"]
    dealt = [worker_env(n, 4, gpus, cores=4)["CUDA_VISIBLE_DEVICES"] for n in range(4)]
    assert dealt == ["3", "5", "3", "5"]  # two workers share each GPU
    assert {worker_env(n, 4, gpus, cores=4)["OMP_NUM_THREADS"] for n in range(4)} == {"1"}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu_slots("auto") is None  # a machine told to see no GPU


def test_a_packed_fleet_trains_its_runs_in_one_worker_and_refuses_what_it_cannot_pack(
    in_tmp, capsys
):
    from mia_bench.cli import main

    small = ["--data.num_runs=4", "--trainer.max_epochs=2", "--model.net.init_args.hidden=[16]"]
    assert main(["fleet", "--runs", "0:3", "--pack", "2", "--group", "p", *small]) == 0
    out = capsys.readouterr().out
    assert out.count("(a pack of 2)") == 2 and out.count("(a pack of 1)") == 1
    client, exp_id = client_and_experiment(MlflowSettings())
    runs = group_runs(client, exp_id, "p")
    assert [r.run_index for r in runs] == [0, 1, 2]
    for run in runs:
        steps = [m.step for m in client.get_metric_history(run.run_id, "train/acc")]
        assert steps == [0, 1]
    logs = sorted(p.name.split(".")[0] for p in (in_tmp / "mlruns" / "fleet" / "p").iterdir())
    assert logs == ["pack_000-001", "pack_002-002", "worker_0"]

    cnn = ["--model.net=mia_bench.nets.CNN", "--runs", "0:2", "--pack", "2", "--group", "c"]
    assert main(["fleet", *cnn, *small[:2]]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and err[0].startswith("mia-bench: error: --pack 2: net ")
    assert "unpacked" in err[0]


def test_a_fleet_with_a_failed_run_exits_non_zero(in_tmp):
    """``python -m mia_bench fleet`` says by its exit status that a run failed."""
    args = [sys.executable, "-m", "mia_bench", "fleet", "--runs", "0:1", *SMALL]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    bad = subprocess.run(
        [*args, "--model.net.init_args.hidden=[-3]"], env=env, text=True, capture_output=True
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "run 0: FAILED" in bad.stdout
