"""Two fleets started at once on one group train every run exactly once."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mia_bench.cli import main
from mia_bench.store.groups import client_and_experiment
from mia_bench.store.runs import MlflowSettings

REPO = Path(__file__).resolve().parents[2]
ENV = os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
FLEET = [
    sys.executable,
    "-m",
    "mia_bench",
    "fleet",
    "-c",
    str(REPO / "lightning_configs" / "quickstart.yaml"),
    "--runs",
    "0:4",
    "--workers",
    "2",
    "--data.num_runs",
    "4",
    "--trainer.max_epochs",
    "2",
]


@pytest.mark.slow
def test_two_fleets_at_once_train_every_run_once(in_tmp, capsys):
    started = time.monotonic()
    fleets = [
        subprocess.Popen(
            FLEET, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV
        )
        for _ in range(2)
    ]
    outputs = [fleet.communicate(timeout=1200)[0] for fleet in fleets]
    seconds = time.monotonic() - started
    assert [f.returncode for f in fleets] == [0, 0], outputs

    client, exp_id = client_and_experiment(MlflowSettings())
    runs = client.search_runs([exp_id], "tags.`mia.group` = 'quickstart'")
    by_index = collections.Counter(r.data.tags["mia.run_index"] for r in runs)
    assert by_index == {str(i): 1 for i in range(4)}, "each run index exactly once"
    assert all(r.info.status == "FINISHED" for r in runs)
    for run in runs:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/acc")]
        assert sorted(steps) == [0, 1], (run.data.tags["mia.run_index"], steps)
    trained = sum(out.count(": finished in ") for out in outputs)
    assert trained == 4, outputs  # no worker trained a run another one trained
    logs = sorted(p.name for p in (in_tmp / "mlruns" / "fleet" / "quickstart").iterdir())
    writers = {int(name.rsplit("-", 1)[1].split(".")[0]) for name in logs}
    assert writers <= {f.pid for f in fleets}, logs  # run_XXX.<host>-<fleet pid>.log

    assert main(["audit", "--group", "quickstart", "--targets", "2", "--attacks", "loss"]) == 0
    with capsys.disabled():
        left = sum(out.count("left to it") for out in outputs)
        skipped = sum(out.count("meanwhile, skipped") for out in outputs)
        print(f"\ntwo fleets: {seconds:.0f}s, {left} left to a holder, {skipped} skipped")
