"""What a user sees in the terminal: a line per epoch off a terminal, a progress bar on
one, the result table and where the run is, and no third-party chatter."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mia_bench.console import mlflow_hint, result_table, run_url
from mia_bench.store.artifacts import local_artifact_dir

FIT = [
    sys.executable,
    "-m",
    "mia_bench",
    "fit",
    "--model.net.init_args.hidden=[32]",
    "--data.batch_size=256",
    "--trainer.max_epochs=2",
]
CHATTER = ("Tip", "litlogger", "LeafSpec", "weights_only", "signals epoch", "Traceback", "v_num")


def _env() -> dict[str, str]:
    return os.environ | {"OMP_NUM_THREADS": "1", "COLUMNS": "120"}


def _only_run(tmp: Path):
    client = MlflowClient(f"sqlite:///{tmp}/mlruns/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("mia-bench").experiment_id])
    return run


def test_result_table_lines_up_each_attack():
    metrics = {
        "loss": {"auc": 0.61234, "tpr_at_fpr_0.001": 0.0040, "tpr_at_fpr_0.01": 0.0213},
        "lira_online": {"auc": 0.7, "tpr_at_fpr_0.01": 0.1},
    }
    lines = result_table(metrics, [0.001, 0.01], title="t").splitlines()
    assert lines[0] == "t"
    assert lines[1].split() == ["attack", "AUC", "TPR@0.1%", "TPR@1%"]
    assert lines[2].split() == ["loss", "0.612", "0.40%", "2.13%"]
    assert lines[3].split() == ["lira_online", "0.700", "-", "10.00%"]  # not measured: "-"
    assert lines[2].index("0.612") == lines[1].index("AUC")


def test_mlflow_hint_gives_an_absolute_store_and_the_run_address(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hint = mlflow_hint("sqlite:///mlruns/mlflow.db?timeout=60", "4", "abc")
    assert f"--backend-store-uri sqlite:///{tmp_path}/mlruns/mlflow.db\n" in hint
    assert hint.endswith(
        "then open http://127.0.0.1:5000/#/experiments/4/runs/abc?workflowType=machine_learning"
    )
    assert run_url("https://mlflow.example.org/", "4") == (
        "https://mlflow.example.org/#/experiments/4/runs?workflowType=machine_learning"
    )


@pytest.mark.slow
def test_fit_off_a_terminal_prints_a_line_per_epoch_and_the_result(tmp_path):
    done = subprocess.run(FIT, cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    out, err = done.stdout, done.stderr
    lines = out.splitlines()
    epochs = [line for line in lines if re.match(r"run 0 of group 'default', epoch \d/1:", line)]
    assert len(epochs) == 2 and "train/acc" in epochs[0] and "loss: AUC 0." in epochs[0]
    run = _only_run(tmp_path)
    art = local_artifact_dir(run.info.artifact_uri)
    history = json.loads((art / "mia" / "history.json").read_text())
    start = lines.index(next(line for line in lines if line.startswith("membership inference")))
    assert "epoch 1" in lines[start]
    assert "AUC [95% CI]" in lines[start + 1] and lines[start + 1].endswith("eps >=")
    rows = {line.split()[0]: line for line in lines[start + 2 : start + 7]}
    assert set(rows) == {"loss", "confidence", "entropy", "modified_entropy", "correctness"}
    for attack, line in rows.items():
        m = history["1"][attack]
        tpr3, tpr2 = (f"tpr_at_fpr_{x}" for x in ("0.001", "0.01"))
        expected = (
            f"{m['auc']:.3f} [{m['auc_low']:.3f}, {m['auc_high']:.3f}]",
            f"{100 * m[tpr3]:.2f}% [{100 * m[tpr3 + '_low']:.2f}, {100 * m[tpr3 + '_high']:.2f}]",
            f"{100 * m[tpr2]:.2f}% [{100 * m[tpr2 + '_low']:.2f}, {100 * m[tpr2 + '_high']:.2f}]",
            f"{m['epsilon_lower_bound']:.2f}",
        )
        assert re.split(r"\s{2,}", line) == [attack, *expected]
        assert m["auc_low"] <= m["auc"] <= m["auc_high"]
    assert f"run {run.info.run_id} in experiment {run.info.experiment_id}" in out
    assert f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}" in out
    assert "mlflow ui --backend-store-uri sqlite:///" in out
    for noise in CHATTER:
        assert noise not in out + err, noise


@pytest.mark.slow
def test_fit_on_a_terminal_shows_the_headline_auc_in_the_progress_bar(tmp_path):
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        FIT, cwd=tmp_path, env=_env(), stdout=secondary, stderr=secondary, stdin=secondary
    )
    os.close(secondary)
    chunks = []
    while True:  # read until the process closes the terminal
        try:
            chunk = os.read(primary, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert proc.wait() == 0
    os.close(primary)
    text = b"".join(chunks).decode(errors="replace")
    assert "Epoch 1/1" in text and "auc(loss)" in text  # the bar, with the headline attack
    assert re.search(r"epoch \d/1: train/acc", text) is None  # no epoch lines beside a bar
    assert "membership inference, run 0 of group 'default', epoch 1" in text
    for noise in ("Tip", "LeafSpec", "weights_only", "v_num", "Traceback", "signals epoch"):
        assert noise not in text, noise  # no second bar beside Lightning's
