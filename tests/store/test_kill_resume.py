"""``kill -9`` of a fit at each phase of an epoch, then ``--ckpt_path last``.

The resumed run must continue from its last complete epoch in the same MLflow run, with
exactly one value per metric and step, whole artifacts, no ``-v1`` checkpoints and no
temporary files left (see :mod:`mia_bench.store.checkpoints`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from mia_bench.store.artifacts import list_epochs, load_signals, local_artifact_dir
from mia_bench.store.checkpoints import is_whole
from mia_bench.store.retention import WEIGHTS_ONLY

KILLPOINTS = Path(__file__).with_name("killpoints")
FIT = [
    sys.executable,
    "-m",
    "mia_bench",
    "fit",
    "--trainer.max_epochs=3",
    "--data.batch_size=256",
    "--trainer.enable_progress_bar=false",
    "--signals.progress=false",
    "--group=killed",
]
EVERY_EPOCH = ["--checkpoints.every_n_epochs=1", "--signals.layers=[embedding]"]


def _fit(folder: Path, *extra: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if kill_at:
        env |= {
            "MIA_KILL_AT": kill_at,
            "PYTHONPATH": os.pathsep.join(
                [str(KILLPOINTS)] + [p for p in [os.environ.get("PYTHONPATH")] if p]
            ),
        }
    return subprocess.run(
        [*FIT, *extra], cwd=folder, env=env, capture_output=True, text=True, timeout=600
    )


def _only_run(folder: Path):
    client = MlflowClient(f"sqlite:///{folder}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("mia-bench")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1, "resuming must continue the killed run, not start another"
    return client, runs[0]


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["epoch", "signals", "last", "commit", "diskfull"])
def test_kill_at_any_phase_then_resume_loses_and_doubles_nothing(tmp_path, phase):
    killed = _fit(tmp_path, *EVERY_EPOCH, kill_at=phase)
    client, run = _only_run(tmp_path)
    if phase == "diskfull":  # the fit fails by itself, and the store stays consistent
        assert killed.returncode == 1 and "No space left on device" in killed.stderr
        assert run.info.status == "FAILED"
        ckpts = tmp_path / "mlruns" / "checkpoints" / run.info.run_id
        assert sorted(p.name for p in ckpts.iterdir()) == ["epoch_000.ckpt", "last.ckpt"]
    else:
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        assert run.info.status == "RUNNING"  # killed: nobody marked it

    resumed = _fit(tmp_path, *EVERY_EPOCH, "--ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    client, run = _assert_one_value_per_step(tmp_path, phase)

    art = local_artifact_dir(run.info.artifact_uri)
    assert list_epochs(art) == [0, 1, 2]
    for epoch in (0, 1, 2):
        signals = load_signals(art, epoch, layers=["embedding"])
        assert signals.logits.shape == (1797, 1, 10) and np.isfinite(signals.logits).all()
    assert run.data.tags["mia.recorded_epochs"] == "0,1,2"

    ckpts = tmp_path / "mlruns" / "checkpoints" / run.info.run_id
    names = sorted(p.name for p in ckpts.iterdir())
    assert names == ["epoch_000.ckpt", "epoch_001.ckpt", "epoch_002.ckpt", "last.ckpt"]
    assert all(is_whole(ckpts / n) for n in names)
    assert os.path.samefile(ckpts / "last.ckpt", ckpts / "epoch_002.ckpt")
    for name, weights_only in [
        ("epoch_000.ckpt", True),
        ("epoch_001.ckpt", True),
        ("last.ckpt", False),
    ]:
        state = torch.load(ckpts / name, map_location="cpu", weights_only=True)
        assert bool(state.get(WEIGHTS_ONLY)) == weights_only, name
    _assert_no_temporary_files(tmp_path)


def _assert_one_value_per_step(folder: Path, phase: str):
    client, run = _only_run(folder)
    assert run.info.status == "FINISHED"
    for key in run.data.metrics:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert sorted(steps) == [0, 1, 2], f"{key}: steps {sorted(steps)} after kill at {phase}"
    return client, run


def _assert_no_temporary_files(folder: Path) -> None:
    leftovers = [p for p in (folder / "mlruns").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


@pytest.mark.slow
def test_default_retention_prunes_what_a_kill_left_once_resumed(tmp_path):
    """Killed with epoch_001.ckpt whole but last.ckpt not yet moved: epoch 0's
    checkpoint is still there (only a newer whole one lets it go); the resumed run
    starts from epoch 1 and ends with the last epoch's checkpoint only."""
    killed = _fit(tmp_path, kill_at="last")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    _, run = _only_run(tmp_path)
    ckpts = tmp_path / "mlruns" / "checkpoints" / run.info.run_id
    assert {"epoch_000.ckpt", "epoch_001.ckpt"} <= {p.name for p in ckpts.iterdir()}

    resumed = _fit(tmp_path, "--ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_one_value_per_step(tmp_path, "last")
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch_002.ckpt", "last.ckpt"]
    assert os.path.samefile(ckpts / "last.ckpt", ckpts / "epoch_002.ckpt")
    _assert_no_temporary_files(tmp_path)


@pytest.mark.slow
def test_a_killed_run_without_checkpoints_is_refused_not_retrained(tmp_path):
    """Without checkpointing, epoch 0's metrics reach MLflow when epoch 1 starts; a kill
    in epoch 1 leaves nothing to resume from, and a resume says so in one line instead
    of logging epoch 0 twice."""
    killed = _fit(tmp_path, "--trainer.enable_checkpointing=false", kill_at="epoch")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    client, run = _only_run(tmp_path)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/acc")] == [0]
    assert not (tmp_path / "mlruns" / "checkpoints" / run.info.run_id).exists()

    resumed = _fit(tmp_path, "--ckpt_path=last")
    assert resumed.returncode == 2
    error = [line for line in resumed.stderr.splitlines() if "error" in line]
    assert len(error) == 1 and "logged epochs but kept no checkpoints" in error[0]
    assert "Traceback" not in resumed.stderr
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/acc")] == [0]
