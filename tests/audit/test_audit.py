"""Audits and per-epoch reference attacks on a small trained group."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest

from mia_bench.cli import main
from mia_bench.store.artifacts import local_artifact_dir
from mia_bench.store.groups import client_and_experiment, group_runs
from mia_bench.store.runs import MlflowSettings

TINY = [
    "--data.num_runs=4",
    "--trainer.max_epochs=3",
    "--model.net.init_args.hidden=[32]",
    "--data.batch_size=128",
    "--trainer.enable_progress_bar=false",
    "--signals.progress=false",
    "--signals.layers=[fc0,embedding]",
]


@pytest.fixture(scope="module")
def group_dir(tmp_path_factory):
    """A 4-run digits group 'g' trained once for the module (cwd = its folder)."""
    folder = tmp_path_factory.mktemp("group")
    old = os.getcwd()
    os.chdir(folder)
    try:
        assert main(["fleet", "--runs", "0:4", "--workers", "2", "--group", "g", *TINY]) == 0
        yield folder
    finally:
        os.chdir(old)


@pytest.fixture
def in_group(group_dir, monkeypatch):
    monkeypatch.chdir(group_dir)
    return group_dir


@pytest.mark.slow
def test_audit_writes_json_table_and_mlflow_run(in_group):
    out = in_group / "audit.json"
    main(
        [
            "audit",
            "--group",
            "g",
            "--targets",
            "3",
            "--output",
            str(out),
            "--attacks",
            "loss,lira_online,lira_offline_fixed_var,rmia_offline",
        ]
    )
    doc = json.loads(out.read_text())
    assert doc["targets"] == [0, 1, 2]
    assert doc["num_references"] == {"0": 3, "1": 3, "2": 3}
    for name in ("loss", "lira_online", "lira_offline_fixed_var", "rmia_offline"):
        entry = doc["attacks"][name]
        assert 0.0 <= entry["auc"]["mean"] <= 1.0 and entry["num_targets"] == 3
        assert set(entry["tpr_at_fpr"]) == {"0.001", "0.01"}
        assert entry["tpr_at_fpr"]["0.001"]["achieved_fpr_mean"] <= 0.001
        assert "mean" in entry["balanced_acc"]
    client, exp_id = client_and_experiment(MlflowSettings())
    run = client.get_run(doc["run_id"])
    assert run.data.tags["mia.audit_of"] == "g"
    assert "mia/auc_mean/lira_online" in run.data.metrics
    names = {f.path for f in client.list_artifacts(doc["run_id"])}
    assert {"audit.csv", "audit.md", "audit.json", "roc.png", "bounds.md", "leaks.csv"} <= names
    # intervals and certified epsilon are audit numbers, not MLflow metrics (but epsilon is)
    assert "mia/epsilon_lower_bound_mean/loss" in run.data.metrics
    assert not [k for k in run.data.metrics if k.endswith(("_low", "_high")) or "_low_" in k]
    # every target's exact and bootstrap intervals and certified epsilon, per attack
    assert {(r["target"], r["attack"]) for r in doc["bounds"]} == {
        (t, a) for t in range(3) for a in ("loss", "lira_online", "lira_offline_fixed_var",
                                           "rmia_offline")
    }  # fmt: skip
    for row in doc["bounds"]:
        metrics = doc["per_target"][str(row["target"])]
        assert row["tpr"] == metrics[f"{row['attack']}/tpr_at_fpr_0.001"]
        assert row["tpr_low"] <= row["tpr"] <= row["tpr_high"]
        assert row["auc_low"] <= row["auc"] <= row["auc_high"]
        assert row["fpr_achieved"] <= 0.001 <= row["fpr_high"] and row["delta"] == 1e-5
        assert row["epsilon_lower_bound"] == metrics[f"{row['attack']}/epsilon_lower_bound"] >= 0
    assert "Clopper-Pearson" in doc["bounds_markdown"] and "| loss |" in doc["bounds_markdown"]
    # the one-page report, self-contained: its figures embedded, the gallery of the pool
    assert {"report.html", "report.md", "gallery.md", "gallery.html"} <= names
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(client.download_artifacts(doc["run_id"], "report.html", tmp)).read_text()
    assert page.count("data:image/png;base64,") >= 1 and 'src="roc.png"' not in page
    for heading in ("Attacks", "ROC of target run 0", "Empirical privacy", "records that leak"):
        assert heading in page
    assert doc["gallery"]["kind"] == "tabular"  # digits: 64 features
    assert "most unlike its class" in page
    # the records that leak, under the strongest attack
    leaks = doc["leaks"]
    assert leaks["attack"] in doc["attacks"] and leaks["num_targets"] == 3
    rates = [r["flag_rate"] for r in leaks["top"] if r["flag_rate"] == r["flag_rate"]]
    assert rates == sorted(rates, reverse=True)


@pytest.mark.slow
def test_audit_every_epoch_logs_a_step_per_epoch(in_group):
    doc_path = in_group / "all.json"
    main(
        [
            "audit",
            "--group",
            "g",
            "--epoch",
            "all",
            "--targets",
            "2",
            "--attacks",
            "loss,nn_embedding",
            "--layers",
            "fc0,embedding",
            "--output",
            str(doc_path),
        ]
    )
    doc = json.loads(doc_path.read_text())
    assert sorted(doc["epochs"]) == ["0", "1", "2"]
    # layer-depth table: a row per layer, an AUC column per epoch
    depth_rows = [line for line in doc["depth_markdown"].splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[1] for r in depth_rows[1:]] == ["fc0", "embedding"]
    assert all(r.count("±") == 3 for r in depth_rows[1:])
    # the per-checkpoint table: one row per epoch with the targets' accuracies
    rows = [
        line for line in doc["epochs_markdown"].splitlines() if line[:3] in ("| 0", "| 1", "| 2")
    ]
    assert len(rows) == 3 and "loss TPR@0.1%" in doc["epochs_markdown"]
    client, _ = client_and_experiment(MlflowSettings())
    steps = [m.step for m in client.get_metric_history(doc["run_id"], "mia/auc_mean/loss")]
    assert sorted(steps) == [0, 1, 2]


@pytest.mark.slow
def test_fit_with_references_logs_reference_attacks_every_epoch(in_group):
    main(
        [
            "fit",
            *TINY,
            "--group=target",
            "--attacks.references=[g]",
            "--attacks.attacks=[loss,lira_online,rmia_offline,nn_embedding,gmia_direct]",
        ]
    )
    client, exp_id = client_and_experiment(MlflowSettings())
    (run,) = client.search_runs([exp_id], "tags.`mia.group` = 'target'")
    keys = ("mia/auc/lira_online", "mia/tpr_at_fpr_0.001/rmia_offline", "mia/auc/loss")
    for key in (*keys, "mia/auc/nn_embedding", "mia/auc/nn_embedding_fc0"):
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == [
            0,
            1,
            2,
        ], key
    # the target is run 0 of its own group, with g's split seed: g's run 0 trained on
    # exactly the target's data and is left out; the other 3 are references
    assert run.data.metrics["mia/num_references"] == 3
    # GMIA's judgement on its vulnerable records is logged every epoch too
    gmia = client.get_metric_history(run.info.run_id, "mia/num_selected/gmia_direct")
    assert sorted(m.step for m in gmia) == [0, 1, 2] and gmia[0].value == 50
    # layer-depth leakage: the embedding attack at each recorded layer, one plot
    art = local_artifact_dir(run.info.artifact_uri)
    assert (art / "mia_depth.png").stat().st_size > 1000


@pytest.mark.slow
def test_references_from_another_pool_are_refused(in_group, capsys):
    main(["fleet", "--runs", "0:2", "--group", "other_seed", *TINY, "--data.split_seed=7"])
    capsys.readouterr()
    audit = ["audit", "--group", "g", "--references", "other_seed", "--attacks", "loss"]
    assert main([*audit, "--allow-partial"]) == 2  # other_seed trained 2 of its 4 runs
    assert re.search("split_seed.*same pool", capsys.readouterr().err)
    client, exp_id = client_and_experiment(MlflowSettings())
    assert len(group_runs(client, exp_id, "other_seed")) == 2


@pytest.mark.slow
def test_checkpoint_audit_recomputes_the_recorded_signals(in_group):
    from mia_bench.audit.checkpoint import config_of_run, signals_of_checkpoint
    from mia_bench.store.artifacts import load_signals

    client, exp_id = client_and_experiment(MlflowSettings())
    run0 = group_runs(client, exp_id, "g")[0]
    ckpt = in_group / "mlruns" / "checkpoints" / run0.run_id / "epoch_002.ckpt"
    config, _ = config_of_run(client, ckpt)
    signals, _ = signals_of_checkpoint(ckpt, config)
    recorded = load_signals(run0.artifact_dir, 2, ["embedding"])
    assert signals.epoch == 2
    np.testing.assert_allclose(signals.logits, recorded.logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        signals.embeddings["embedding"], recorded.embeddings["embedding"], rtol=1e-5, atol=1e-5
    )
    out = in_group / "own.json"
    main(
        [
            "audit",
            "--checkpoint",
            str(ckpt),
            "--references",
            "g",
            "--attacks",
            "loss,lira_online",
            "--output",
            str(out),
        ]
    )
    doc = json.loads(out.read_text())
    assert doc["num_references"] == {"0": 3}  # the group less the checkpoint's own run
    assert doc["attacks"]["lira_online"]["num_targets"] == 1


def test_checkpoint_outside_a_run_needs_config_and_keep(in_tmp, tmp_path, capsys):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"")
    assert main(["audit", "--checkpoint", str(ckpt), "--references", "g"]) == 2
    assert "pass --config" in capsys.readouterr().err


@pytest.mark.slow
def test_parallel_fleet_workers_lose_nothing(in_group):
    """The fixture trained 4 runs with 2 workers sharing one SQLite store."""
    client, exp_id = client_and_experiment(MlflowSettings())
    runs = group_runs(client, exp_id, "g")
    assert [r.run_index for r in runs] == [0, 1, 2, 3]
    assert len(client.search_runs([exp_id], "tags.`mia.group` = 'g'")) == 4
    for run in runs:
        assert run.status == "FINISHED"
        for key in ("train/acc", "gap/acc", "mia/auc/loss"):
            assert sorted(m.step for m in client.get_metric_history(run.run_id, key)) == [0, 1, 2]
        assert run.epochs() == [0, 1, 2]


@pytest.mark.slow
def test_record_adds_layers_from_checkpoints_and_skips_done_runs(in_group, capsys):
    from mia_bench.store.artifacts import embedding_path, load_signals

    runs = group_runs(*client_and_experiment(MlflowSettings()), "g")
    assert not embedding_path(runs[0].artifact_dir, 2, "head").exists()
    assert main(["record", "--group", "g", "--epoch", "2", "--layers", "head"]) == 0
    for run in runs:
        signals = load_signals(run.artifact_dir, 2, layers=["head"])
        # the logits layer's hook output is the recorded plain-view logits
        np.testing.assert_allclose(signals.embeddings["head"], signals.logits[:, 0], atol=1e-4)
    stamp = embedding_path(runs[0].artifact_dir, 2, "head").stat().st_mtime_ns
    main(["record", "--group", "g", "--epoch", "2", "--layers", "head"])  # all done: skipped
    assert embedding_path(runs[0].artifact_dir, 2, "head").stat().st_mtime_ns == stamp
    capsys.readouterr()
    # 3 epochs keep only the last epoch's checkpoint (every 10th epoch's, and the last)
    assert main(["record", "--group", "g", "--epoch", "1", "--layers", "head"]) == 2
    assert (
        "kept no checkpoint of epoch 1; it has checkpoints of epochs 2" in capsys.readouterr().err
    )


@pytest.mark.slow
def test_audit_reports_gmia_on_vulnerable_records(in_group):
    doc_path = in_group / "gmia.json"
    attacks = "loss,lira_online_fixed_var,gmia_direct"
    main(
        ["audit", "--group", "g", "--targets", "2", "--attacks", attacks, "--output", str(doc_path)]
    )
    doc = json.loads(doc_path.read_text())
    for metrics in doc["per_target"].values():
        assert metrics["gmia_direct/num_selected"] == 50
        predicted = metrics["gmia_direct/num_predicted"]
        assert 0 <= predicted <= 50
        if predicted:  # the other attacks are judged at as many predictions
            assert 0 <= metrics["gmia_direct/loss_precision"] <= 1
    rows = [line for line in doc["gmia_markdown"].splitlines() if line.startswith("| ")]
    assert len(rows) == 3 and "lira_online_fixed_var precision" in rows[0]


@pytest.mark.slow
def test_default_attacks_leave_out_the_embedding_attacks_when_no_embeddings_were_recorded(
    in_group, capsys
):
    from mia_bench.attacks import ATTACKS

    out = in_group / "audit_default.json"
    common = ["audit", "--group", "g", "--targets", "1", "--epoch", "1", "--output", str(out)]
    assert main([*common, "--layers", "[head]"]) == 0  # no run recorded layer head
    doc = json.loads(out.read_text())
    embedding = sorted(n for n, a in ATTACKS.items() if a.needs_embeddings)
    assert embedding and sorted(doc["attacks_left_out"]) == embedding
    assert not set(doc["attacks"]) & set(embedding) and "loss" in doc["attacks"]
    assert "left out: " in capsys.readouterr().out
    assert main([*common, "--layers", "[embedding]"]) == 0  # recorded: they run too
    doc = json.loads(out.read_text())
    assert doc["attacks_left_out"] == [] and set(embedding) <= set(doc["attacks"])
