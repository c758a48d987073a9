"""Checkpoint retention (``--checkpoints.*``): which epoch checkpoints a fit keeps, the
weights-only form of the superseded ones, and ``mia-bench record`` on what is left."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from mia_bench.audit.checkpoint import config_of_run, signals_of_checkpoint
from mia_bench.cli import main
from mia_bench.store.artifacts import embedding_path, load_signals
from mia_bench.store.groups import client_and_experiment, group_runs
from mia_bench.store.retention import TRAINING_STATE, WEIGHTS_ONLY, CheckpointRetention
from mia_bench.store.runs import MlflowSettings

TINY = [
    "--model.net.init_args.hidden=[32]",
    "--data.batch_size=256",
    "--signals.progress=false",
    "--trainer.enable_progress_bar=false",
    "--group=kept",
]


def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_retention_keeps_every_nth_epoch_and_the_newest():
    assert CheckpointRetention(every_n_epochs=10).kept(100) == list(range(9, 100, 10))
    assert CheckpointRetention(every_n_epochs=1).kept(3) == [0, 1, 2]
    assert CheckpointRetention(every_n_epochs=4).kept(6) == [3, 5]  # the last epoch stays
    assert CheckpointRetention(every_n_epochs=0).kept(6) == [5]


@pytest.mark.slow
def test_fit_keeps_every_nth_checkpoint_weights_only_and_record_reads_them(in_tmp, capsys):
    assert main(["fit", *TINY, "--trainer.max_epochs=6", "--checkpoints.every_n_epochs=2"]) == 0
    client, exp_id = client_and_experiment(MlflowSettings())
    (run,) = group_runs(client, exp_id, "kept")
    folder = in_tmp / "mlruns" / "checkpoints" / run.run_id
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["epoch_001.ckpt", "epoch_003.ckpt", "epoch_005.ckpt", "last.ckpt"]
    assert os.path.samefile(folder / "last.ckpt", folder / "epoch_005.ckpt")
    newest = _state(folder / "epoch_005.ckpt")
    assert all(key in newest for key in TRAINING_STATE) and WEIGHTS_ONLY not in newest
    for epoch in (1, 3):
        stripped = _state(folder / f"epoch_{epoch:03d}.ckpt")
        assert stripped[WEIGHTS_ONLY] and not any(key in stripped for key in TRAINING_STATE)
        assert (
            stripped["epoch"] == epoch
            and stripped["state_dict"].keys() == newest["state_dict"].keys()
        )
        assert (folder / f"epoch_{epoch:03d}.ckpt").stat().st_size < (
            folder / "epoch_005.ckpt"
        ).stat().st_size / 2  # Adam: weights + two moments

    # a weights-only checkpoint reproduces the signals recorded at its epoch
    ckpt = folder / "epoch_003.ckpt"
    signals, _ = signals_of_checkpoint(ckpt, config_of_run(client, ckpt)[0], ())
    np.testing.assert_allclose(signals.logits, load_signals(run.artifact_dir, 3).logits, atol=1e-5)
    assert main(["record", "--group", "kept", "--epoch", "3", "--layers", "fc0"]) == 0
    assert embedding_path(run.artifact_dir, 3, "fc0").is_file()

    capsys.readouterr()
    assert main(["record", "--group", "kept", "--epoch", "2", "--layers", "fc0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "kept no checkpoint of epoch 2" in err
    assert "checkpoints of epochs 1, 3, 5" in err and "--checkpoints.every_n_epochs" in err


@pytest.mark.slow
def test_fit_without_checkpointing_logs_every_epoch_and_refuses_to_resume(in_tmp, capsys):
    no_ckpt = [*TINY, "--trainer.max_epochs=3", "--trainer.enable_checkpointing=false"]
    assert main(["fit", *no_ckpt]) == 0
    client, exp_id = client_and_experiment(MlflowSettings())
    (run,) = group_runs(client, exp_id, "kept")
    assert run.status == "FINISHED"
    for key in ("train/acc", "test/acc", "gap/acc", "mia/auc/loss"):
        steps = sorted(m.step for m in client.get_metric_history(run.run_id, key))
        assert steps == [0, 1, 2], key
    folder = in_tmp / "mlruns" / "checkpoints" / run.run_id
    assert not folder.exists() or not any(folder.iterdir())
    assert main(["record", "--group", "kept", "--epoch", "2", "--layers", "fc0"]) == 2
    assert "nor of any other epoch" in capsys.readouterr().err

    assert main(["fit", *no_ckpt, "--group=other", "--ckpt_path=last"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "keeps no checkpoints to resume from" in err
    assert len(client.search_runs([exp_id])) == 1  # refused before a run was opened


def test_an_epoch_prunes_only_what_it_superseded(tmp_path, monkeypatch):
    # pruning runs at every epoch's end: only the first prune of a process reads every
    # older checkpoint (a killed attempt may have left some); later ones touch one file
    from mia_bench.store import checkpoints

    for epoch in range(6):
        torch.save({"state_dict": {"w": torch.zeros(3)}}, tmp_path / f"epoch_{epoch:03d}.ckpt")
    stripped = []
    monkeypatch.setattr(checkpoints, "strip_to_weights", lambda p: stripped.append(p.name))
    rule = CheckpointRetention(every_n_epochs=2)
    removed = checkpoints.prune(tmp_path, 4, rule)  # first prune: epochs 0..3
    assert sorted(p.name for p in removed) == ["epoch_000.ckpt", "epoch_002.ckpt"]
    assert stripped == ["epoch_001.ckpt", "epoch_003.ckpt"]
    stripped.clear()
    assert checkpoints.prune(tmp_path, 5, rule, since=4) == [tmp_path / "epoch_004.ckpt"]
    assert stripped == []  # epochs 1 and 3 were not read again
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "epoch_001.ckpt",
        "epoch_003.ckpt",
        "epoch_005.ckpt",
    ]
