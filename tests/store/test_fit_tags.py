"""What a real ``mia-bench fit`` tells the store: its command, its recipe's fingerprint,
and nothing sent over the network unless asked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mia_bench.cli import main
from mia_bench.lightning_cli import parse_fit_config
from mia_bench.store.checkpoints import epoch_checkpoint_path
from mia_bench.store.groups import client_and_experiment, scan_group
from mia_bench.store.runs import MlflowSettings, config_fingerprint

TINY = ["--trainer.max_epochs=1", "--data.batch_size=512", "--trainer.enable_progress_bar=false"]
TINY += ["--signals.progress=false", "--group=tags"]


@pytest.mark.slow
def test_fit_tags_its_fingerprint_and_test_runs_take_no_group_slot(in_tmp, capsys):
    assert main(["fit", *TINY]) == 0
    client, exp = client_and_experiment(MlflowSettings())
    (fit,) = client.search_runs([exp])
    assert fit.data.tags["mia.command"] == "fit"
    # the fingerprint a fleet computes before any run starts, for another run index
    config, _ = parse_fit_config([*TINY, "--data.run_index=1"])
    assert fit.data.tags["mia.fingerprint"] == config_fingerprint(config.clone().as_dict())
    other, _ = parse_fit_config([*TINY, "--trainer.max_epochs=2"])
    assert fit.data.tags["mia.fingerprint"] != config_fingerprint(other.clone().as_dict())

    ckpt = epoch_checkpoint_path(Path("mlruns/checkpoints") / fit.info.run_id, 0)
    test = [a for a in TINY if "progress" not in a and "max_epochs" not in a]
    assert main(["test", *test, f"--ckpt_path={ckpt}"]) == 0
    runs = client.search_runs([exp])
    assert {r.data.tags["mia.command"] for r in runs} == {"fit", "test"}
    members = scan_group(client, exp, "tags")
    assert [r.run_id for r in members.members] == [fit.info.run_id]
    assert "a test run, not a fit run" in members.excluded[0].reason

    # a fleet of another recipe on this group refuses, naming both fingerprints
    capsys.readouterr()
    assert main(["fleet", "--runs=0:2", *TINY, "--trainer.max_epochs=2"]) == 2
    err = capsys.readouterr().err
    assert "group 'tags' was trained with another recipe" in err
    assert fit.data.tags["mia.fingerprint"] in err and "--group NEW_NAME" in err


@pytest.mark.slow
def test_fit_looks_up_no_host(tmp_path):
    """No telemetry, update check or download: a fit makes no DNS lookup at all."""
    log = tmp_path / "hosts.txt"
    log.write_text("")
    here = Path(__file__).resolve().parents[1] / "netlog"
    env = os.environ | {"MIA_NETLOG": str(log), "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(here), os.environ.get("PYTHONPATH")] if p)
    done = subprocess.run(
        [sys.executable, "-m", "mia_bench", "fit", *TINY],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    hosts = {h for h in log.read_text().split() if h not in ("localhost", "127.0.0.1", "::1")}
    assert hosts == set(), f"a fit looked up {sorted(hosts)}"
