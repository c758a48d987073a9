"""The real CLI on tiny configs: what a fit leaves in MLflow and on disk."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from mia_bench.cli import main
from mia_bench.store.artifacts import list_epochs, load_keep, load_signals, local_artifact_dir

TINY = [
    "--model.net.init_args.hidden=[32]",
    "--data.batch_size=256",
    "--signals.progress=false",
    "--trainer.enable_progress_bar=false",
]


def _fit(*extra: str) -> int:
    return main(["fit", *TINY, *extra])


def _runs(tmp: Path):
    client = MlflowClient(f"sqlite:///{tmp}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("mia-bench")
    return client, client.search_runs([exp.experiment_id])


def _steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


@pytest.mark.slow
def test_fit_writes_signals_metrics_checkpoints(in_tmp):
    _fit("--trainer.max_epochs=2", "--group=tiny")
    client, runs = _runs(in_tmp)
    assert len(runs) == 1
    run = runs[0]
    tags = run.data.tags
    assert tags["mia.group"] == "tiny" and tags["mia.run_index"] == "0"
    assert tags["mia.num_runs"] == "2" and tags["mia.split_seed"] == "0"
    assert tags["mia.seed"] == "0"  # seed_everything + run_index
    for key in (
        "train/acc",
        "test/acc",
        "gap/acc",
        "gap/loss",
        "mia/auc/loss",
        "mia/tpr_at_fpr_0.001/loss",
        "mia/auc/modified_entropy",
    ):
        assert _steps(client, run.info.run_id, key) == [0, 1], key
    # MLflow's chart sections hold one measure for every attack; constants are params
    mia = [k for k in run.data.metrics if k.startswith("mia/")]
    assert {k.rsplit("/", 1)[0] for k in mia} == {
        "mia/auc",
        "mia/balanced_acc",
        "mia/tpr_at_fpr_0.001",
        "mia/tpr_at_fpr_0.01",
        "mia/epsilon_lower_bound",
    }
    assert not [k for k in run.data.metrics if "num_members" in k or "fpr_at_fpr" in k]
    assert "privacy/epsilon_lower_bound" in run.data.metrics
    members = int(load_keep(local_artifact_dir(run.info.artifact_uri)).sum())
    assert run.data.params["mia.num_members"] == str(members)
    assert run.data.params["mia.num_nonmembers"] == str(1797 - members)
    kind = client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"]
    assert kind == "custom_model_development"  # the UI opens on the training runs
    # gap/acc is exactly train - test of the same epoch
    last = run.data.metrics
    assert last["gap/acc"] == pytest.approx(last["train/acc"] - last["test/acc"])

    art = local_artifact_dir(run.info.artifact_uri)
    keep = load_keep(art)
    assert keep.dtype == bool and keep.shape == (1797,)
    assert list_epochs(art) == [0, 1]
    signals = load_signals(art, 1)
    assert signals.logits.shape == (1797, 1, 10) and signals.logits.dtype == np.float32
    assert not (art / "embeddings").exists()  # no default attack reads embeddings
    assert (art / "roc" / "epoch_001.png").stat().st_size > 1000
    assert (art / "mia_vs_epoch.png").stat().st_size > 1000
    history = json.loads((art / "mia" / "history.json").read_text())
    assert sorted(history) == ["0", "1"]  # every attacked epoch, every number
    assert history["1"]["loss"]["auc"] == pytest.approx(last["mia/auc/loss"])
    assert history["1"]["loss"]["fpr_at_fpr_0.001"] <= 0.001
    assert history["1"]["loss"]["num_members"] == members
    assert "class_path: mia_bench.data.Digits" in (art / "config.yaml").read_text()

    ckpts = sorted(p.name for p in (in_tmp / "mlruns" / "checkpoints" / run.info.run_id).iterdir())
    assert ckpts == ["epoch_001.ckpt", "last.ckpt"]  # every 10th epoch's, and the newest


@pytest.mark.slow
def test_a_finished_run_is_not_extended_under_another_recipe(in_tmp, capsys):
    """Resuming continues an interrupted run (tests/store/test_kill_resume.py); a finished
    run asked for more epochs is another recipe (another fingerprint): refused in one line."""
    assert _fit("--trainer.max_epochs=2", "--group=resume", "--signals.every_n_epochs=2") == 0
    assert _fit("--trainer.max_epochs=3", "--group=resume", "--ckpt_path=last") == 2
    assert "group 'resume' was trained with another recipe" in capsys.readouterr().err
    client, runs = _runs(in_tmp)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert _steps(client, runs[0].info.run_id, "train/acc") == [0, 1]
    # every_n_epochs=2 records epoch 1, and always the last epoch (1 too)
    assert list_epochs(local_artifact_dir(runs[0].info.artifact_uri)) == [1]
    assert runs[0].data.tags["mia.recorded_epochs"] == "1"


@pytest.mark.slow
def test_resume_without_earlier_run_is_a_clear_error(in_tmp, capsys):
    assert _fit("--trainer.max_epochs=1", "--group=ghost", "--ckpt_path=last") == 2
    err = capsys.readouterr().err
    assert "nothing to resume" in err and "group 'ghost'" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data.run_index=5"], "run_index=5 is outside"),
        (["--data.num_runs=3", "--data.pkeep=0.5"], "not a whole number"),
        (["--attacks.attacks=[nope]"], "unknown attack"),
    ],
)
def test_bad_input_exits_with_clear_error(in_tmp, args, message):
    result = subprocess.run(
        [sys.executable, "-m", "mia_bench", "fit", "--trainer.max_epochs=1", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.slow
def test_early_stopping_still_records_and_attacks_the_last_epoch(in_tmp):
    config = Path(__file__).resolve().parents[1] / "lightning_configs"
    main(
        [
            "fit",
            "-c",
            str(config / "quickstart.yaml"),
            "-c",
            str(config / "early_stopping.yaml"),
            "--trainer.max_epochs=200",
            "--signals.every_n_epochs=50",
            "--signals.progress=false",
            "--trainer.enable_progress_bar=false",
            "--group=es",
        ]
    )
    client, runs = _runs(in_tmp)
    run = runs[0]
    last = max(_steps(client, run.info.run_id, "train/acc"))
    assert last < 199, "early stopping should have stopped the run"
    art = local_artifact_dir(run.info.artifact_uri)
    assert list_epochs(art)[-1] == last
    assert _steps(client, run.info.run_id, "mia/auc/loss")[-1] == last
    assert (art / "roc" / f"epoch_{last:03d}.png").exists()


HEAVY = ("torch", "lightning", "mlflow", "transformers", "sklearn", "torchvision")


@pytest.mark.parametrize(
    "command",
    [[], ["fleet"], ["audit"], ["compare"], ["sweep"], ["record"], ["configs"], ["notebook"]],
)
def test_help_answers_without_loading_heavy_libraries(command):
    # --help must be instant: no Lightning, MLflow or torch import (they take seconds)
    script = (
        "import json, sys\n"
        "from mia_bench.cli import main\n"
        "try:\n"
        f"    main({command + ['--help']!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert "usage: mia-bench" in done.stdout
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def _help_of(command: list[str], env: dict[str, str]) -> tuple[str, list[str]]:
    """``mia-bench COMMAND --help`` in a subprocess: its text and the heavy modules it loaded."""
    script = (
        "import json, sys\n"
        "from mia_bench.cli import main\n"
        f"main({command + ['--help']!r})\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env
    )
    return done.stdout, json.loads(done.stderr.strip().splitlines()[-1])


def test_lightning_subcommands_help_is_rendered_once_then_answered_from_the_cache(tmp_path):
    env = os.environ | {"MIA_BENCH_CACHE": str(tmp_path / "cache"), "COLUMNS": "100"}
    fit = [sys.executable, "-m", "mia_bench", "fit", "--trainer.max_epochs=1"]
    fit += ["--mlflow.tracking_uri", f"sqlite:///{tmp_path}/mlflow.db"]
    fit += ["--mlflow.checkpoint_dir", str(tmp_path / "checkpoints")]
    subprocess.run(fit, cwd=tmp_path, capture_output=True, check=True, env=env)
    # the fit stored every Lightning subcommand's help: none loads Lightning now
    for sub in ("fit", "validate", "test"):
        text, heavy = _help_of([sub], env)
        assert heavy == [], sub
        assert text.startswith(f"usage: mia-bench [options] {sub}")
    warm, _ = _help_of(["fit"], env)
    assert "--trainer.max_epochs" in warm and "--signals.views" in warm
    # without the cache the text is rendered by LightningCLI: the same text, now stored
    shutil.rmtree(tmp_path / "cache")
    rendered, heavy = _help_of(["fit"], env)
    assert "lightning" in heavy and rendered == warm
    assert list((tmp_path / "cache" / "help").glob("fit-*.txt"))


def test_only_the_lightning_subcommands_that_work_are_offered(capsys):
    with pytest.raises(SystemExit) as done:
        main(["predict"])
    assert done.value.code == 2
    assert "invalid choice: 'predict'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag",
    [
        "--optimizer=torch.optim.SGD",  # would replace the model's optimizer, and DP-SGD's
        "--lr_scheduler=torch.optim.lr_scheduler.StepLR",
        "--model.class_path=mia_bench.data.Digits",  # a model must be a LightningModule
    ],
)
def test_options_that_would_bypass_the_model_are_refused(in_tmp, capsys, flag):
    with pytest.raises(SystemExit) as done:
        main(["fit", flag])
    assert done.value.code == 2
    assert flag.split("=")[1] in capsys.readouterr().err  # named in jsonargparse's error
