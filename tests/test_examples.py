"""examples/own_module end to end on digits: a LightningModule of one's own, trained in a
plain Trainer and by ``mia-bench fit``, then audited from its checkpoints."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mia_bench.cli import main
from mia_bench.store.artifacts import load_keep, load_signals, local_artifact_dir
from mia_bench.store.groups import client_and_experiment, group_runs
from mia_bench.store.runs import MlflowSettings

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_module"
CONFIG = EXAMPLE / "own_module.yaml"
QUIET = ["--signals.progress=false", "--trainer.enable_progress_bar=false"]
EPOCHS = 2


def _plain_trainer_run() -> str:
    """``python train.py --max_epochs 2``, in this process; returns its run id."""
    spec = importlib.util.spec_from_file_location("own_module_train", EXAMPLE / "train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    return train.main(["--max_epochs", str(EPOCHS)])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Runs 0 and 1 of group own_module by ``mia-bench fit`` and run 0 of a plain Trainer,
    in one store (cwd = its folder); yields the plain run's id."""
    folder = tmp_path_factory.mktemp("own_module")
    old = os.getcwd()
    os.chdir(folder)
    sys.path.insert(0, str(EXAMPLE))  # my_module importable, as with PYTHONPATH
    try:
        for run_index in (0, 1):
            fit = ["fit", "-c", str(CONFIG), f"--trainer.max_epochs={EPOCHS}", *QUIET]
            assert main([*fit, f"--data.run_index={run_index}"]) == 0
        yield _plain_trainer_run()
    finally:
        sys.path.remove(str(EXAMPLE))
        os.chdir(old)


def _checkpoint(run_id: str) -> Path:
    return Path(MlflowSettings().checkpoint_dir).resolve() / run_id / "last.ckpt"


def _assert_recorded(client, run_id: str) -> None:
    """MLflow has the run's accuracy and attack curves (step = epoch) and its artifacts."""
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    epochs = list(range(EPOCHS))
    for key in ("train/acc", "test/acc", next(k for k in run.data.metrics if "auc" in k)):
        assert sorted(m.step for m in client.get_metric_history(run_id, key)) == epochs, key
    art = local_artifact_dir(run.info.artifact_uri)
    assert load_keep(art).shape == (1797,)
    assert load_signals(art, EPOCHS - 1).logits.shape == (1797, 1, 10)
    assert (art / "roc" / f"epoch_{EPOCHS - 1:03d}.png").stat().st_size > 1000
    assert (art / "mia_vs_epoch.png").stat().st_size > 1000  # RunSummary's figure
    weights = torch.load(_checkpoint(run_id), map_location="cpu", weights_only=True)
    assert {"body.0.weight", "head.weight"} <= set(weights["state_dict"])  # DigitsMLP's


@pytest.mark.slow
def test_a_plain_trainer_with_the_callbacks_logs_metrics_and_artifacts(store):
    client, _ = client_and_experiment(MlflowSettings())
    _assert_recorded(client, store)


@pytest.mark.slow
def test_mia_bench_fit_trains_the_users_module(store):
    client, exp_id = client_and_experiment(MlflowSettings())
    runs = group_runs(client, exp_id, "own_module")
    assert [r.run_index for r in runs] == [0, 1]
    for run in runs:
        _assert_recorded(client, run.run_id)
        assert "class_path: my_module.DigitsMLP" in (run.artifact_dir / "config.yaml").read_text()


@pytest.mark.slow
def test_checkpoint_audit_builds_the_users_module_from_the_runs_config(store, tmp_path):
    from mia_bench.audit.checkpoint import config_of_run, signals_of_checkpoint

    client, exp_id = client_and_experiment(MlflowSettings())
    run0 = group_runs(client, exp_id, "own_module")[0]
    config, _ = config_of_run(client, _checkpoint(run0.run_id))
    signals, _ = signals_of_checkpoint(_checkpoint(run0.run_id), config, ())
    recorded = load_signals(run0.artifact_dir, EPOCHS - 1)
    np.testing.assert_allclose(signals.logits, recorded.logits, rtol=1e-5, atol=1e-5)
    out = tmp_path / "audit.json"
    audit = ["audit", "--checkpoint", str(_checkpoint(run0.run_id)), "--references", "own_module"]
    assert main([*audit, "--attacks", "loss,lira_offline", "--output", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["num_references"] == {"0": 1}  # the group less the checkpoint's own run
    assert 0 <= doc["attacks"]["loss"]["auc"]["mean"] <= 1


@pytest.mark.slow
def test_a_plain_trainers_checkpoint_is_audited_with_the_fit_config(store, tmp_path, capsys):
    audit = ["audit", "--checkpoint", str(_checkpoint(store)), "--references", "own_module"]
    assert main([*audit, "--attacks", "loss"]) == 2  # its run logged no config
    assert "logged no config.yaml: pass --config" in capsys.readouterr().err
    out = tmp_path / "audit.json"
    assert main([*audit, "--config", str(CONFIG), "--attacks", "loss", "--output", str(out)]) == 0
    doc = json.loads(out.read_text())  # its keep row was found with its run: run 0's,
    # so fit's run 0, trained on exactly its data, is no reference; run 1 is
    assert doc["num_references"] == {"0": 1} and doc["attacks"]["loss"]["num_targets"] == 1
