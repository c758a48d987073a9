"""The group membership rule, and the audit's refusals, on hand-made MLflow runs.

Runs are created directly in a SQLite store with the tags ``mia-bench fit`` writes and
real signal files, so every case of the rule is cheap to build: unfinished, failed,
another recipe, a ``test`` run, a duplicate, missing signals.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from mia_bench.cli import main
from mia_bench.data.splits import keep_matrix
from mia_bench.store.artifacts import EpochSignals, local_artifact_dir, save_keep, save_signals
from mia_bench.store.groups import client_and_experiment, scan_group
from mia_bench.store.runs import MlflowSettings, experiment_id, resolve_tracking_uri

N, M = 200, 4


def _run(client, exp, index, *, status="FINISHED", fingerprint="f1", command="fit", epochs=(0, 1)):
    """A run as ``mia-bench fit`` leaves it, with signals whose loss leaks membership."""
    tags = {
        "mia.group": "g",
        "mia.run_index": str(index),
        "mia.num_runs": str(M),
        "mia.fingerprint": fingerprint,
        "mia.command": command,
        "mia.dataset": "toy",
        "mia.num_examples": str(N),
        "mia.split_seed": "0",
        "mia.recorded_epochs": ",".join(map(str, epochs)),
    }
    run = client.create_run(exp, tags=tags)
    folder = local_artifact_dir(run.info.artifact_uri)
    keep = keep_matrix(N, M, 0.5, 0)[index % M]
    rng = np.random.default_rng(index)
    labels = rng.integers(0, 3, N)
    for epoch in epochs:
        logits = rng.normal(size=(N, 1, 3)).astype(np.float32)
        logits[np.arange(N), 0, labels] += 3.0 * keep
        save_signals(folder, EpochSignals(epoch, logits, labels))
    save_keep(folder, keep)
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


@pytest.fixture
def store(in_tmp):
    settings = MlflowSettings()
    client = MlflowClient(resolve_tracking_uri(settings.tracking_uri))
    exp = experiment_id(client, settings)
    ids = [_run(client, exp, i) for i in range(M)]
    return client, exp, ids


def _audit(*extra: str) -> int:
    return main(["audit", "--group=g", "--targets=2", "--attacks=[loss, lira_offline]", *extra])


def test_a_complete_group_audits_and_records_the_runs_it_used(store, in_tmp):
    _, _, ids = store
    assert _audit() == 0
    doc = json.loads((in_tmp / "audit.json").read_text())
    assert doc["excluded"] == []
    assert doc["used"]["0"]["run_id"] == ids[0] and doc["used"]["0"]["epoch"] == 1
    assert sorted(r for r, _ in doc["used"]["0"]["references"]) == sorted(ids[1:])


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ({"fingerprint": "f2", "epochs": (0,)}, "differs from the group's f1"),
        ({"command": "test"}, "a test run, not a fit run"),
        ({"status": "RUNNING"}, "status RUNNING"),
    ],
)
def test_a_later_run_of_an_index_never_replaces_the_real_one(store, in_tmp, kind, reason):
    client, exp, ids = store
    later = _run(client, exp, 2, **kind)
    members = scan_group(*client_and_experiment(MlflowSettings()), "g")
    assert [r.run_id for r in members.members] == ids
    assert [(e.run_index, e.run_id) for e in members.excluded] == [(2, later)]
    assert reason in members.excluded[0].reason
    assert _audit() == 0
    doc = json.loads((in_tmp / "audit.json").read_text())
    assert doc["excluded"][0]["run_id"] == later
    used = {r for u in doc["used"].values() for r, _ in u["references"]}
    assert later not in used


def test_a_duplicate_finished_run_is_reported_not_used(store):
    client, exp, ids = store
    dup = _run(client, exp, 1)
    members = scan_group(client, exp, "g")
    assert [r.run_id for r in members.members] == ids
    assert "duplicate of run " + ids[1] in members.excluded[0].reason
    assert members.excluded[0].run_id == dup


def test_an_audit_while_the_fleet_trains_is_refused_unless_partial(in_tmp, capsys):
    settings = MlflowSettings()
    client = MlflowClient(resolve_tracking_uri(settings.tracking_uri))
    exp = experiment_id(client, settings)
    for i in range(M):
        _run(client, exp, i, status="RUNNING" if i == 3 else "FINISHED", epochs=(0,))
    assert _audit() == 2
    err = capsys.readouterr().err
    assert "lacks 1 of its 4 runs: run 3: status RUNNING" in err and "--allow-partial" in err
    assert "Traceback" not in err
    assert _audit("--allow-partial") == 0
    doc = json.loads((in_tmp / "audit.json").read_text())
    assert all(len(u["references"]) == 2 for u in doc["used"].values())


def test_missing_signals_of_a_recorded_epoch_leave_the_run_out(store):
    client, exp, ids = store
    folder = local_artifact_dir(client.get_run(ids[3]).info.artifact_uri)
    (folder / "signals" / "epoch_001.npz").unlink()
    members = scan_group(client, exp, "g")
    assert "signals of epochs [1] missing" in members.excluded[0].reason


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--references=[nosuch]"], "reference group 'nosuch' has no finished runs"),
        (["--epoch=99"], "--epoch 99: runs [0, 1] of group 'g' recorded no signals"),
        (["--targets=0"], "--targets 0: an audit needs at least 1 target"),
        (["--targets=9"], "--targets 9 is more than group 'g' has runs (4)"),
        (["--epoch=soon"], "--epoch 'soon': give 'last', 'all' or an epoch number"),
        (["--fprs=[0.001, 2]"], "strictly between 0 and 1"),
    ],
)
def test_audit_mistakes_are_one_line_errors(store, capsys, args, message):
    assert _audit(*args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert not Path("audit.json").exists()


def test_unknown_group_is_a_one_line_error(in_tmp, capsys):
    assert main(["audit", "--group=ghost"]) == 2
    assert "group 'ghost' has no finished runs" in capsys.readouterr().err


def test_a_damaged_reference_stops_the_audit_or_is_left_out_with_partial(store, capsys):
    client, _, ids = store
    folder = local_artifact_dir(client.get_run(ids[3]).info.artifact_uri)
    path = folder / "signals" / "epoch_001.npz"
    path.write_bytes(path.read_bytes()[:100])
    assert _audit() == 2
    err = capsys.readouterr().err
    assert str(path) in err and ids[3] in err and "\n" not in err.strip()
    with pytest.warns(UserWarning, match=f"left out run 3 \\({ids[3]}\\)"):
        assert _audit("--allow-partial") == 0
    doc = json.loads(Path("audit.json").read_text())
    assert all(ids[3] not in {r for r, _ in u["references"]} for u in doc["used"].values())


def test_a_slot_is_claimed_under_its_lease_and_checked_against_the_rule(store):
    from mia_bench.store.leases import lease_holder
    from mia_bench.store.slots import AlreadyTrained, claim_slot

    client, exp, ids = store
    with pytest.raises(AlreadyTrained, match=f"already trained \\(MLflow run {ids[2]}"):
        claim_slot(client, exp, "g", 2, "f1", resume=False)
    with pytest.raises(ValueError, match="trained with another recipe .*f1; this config's is f9"):
        claim_slot(client, exp, "g", 2, "f9", resume=False)
    assert lease_holder(client, exp, "g", 2) is None  # given back both times
    with pytest.raises(AlreadyTrained):  # a resume planned before another process finished it
        claim_slot(client, exp, "g", 2, "f1", resume=True)
