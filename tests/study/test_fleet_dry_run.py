"""``mia-bench fleet --dry-run``: the plan, the projected store and the audit cost, with
nothing trained, no store created and no MLflow run opened."""

from __future__ import annotations

from pathlib import Path

import pytest

from mia_bench.cli import main
from mia_bench.data import CIFAR10Partial, Digits, Location
from mia_bench.lightning_cli import instantiate_fit
from mia_bench.study.footprint import project_run, size

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "lightning_configs"
TINY = ["--model.net.init_args.hidden=[32]", "--data.batch_size=256"]


def _dry_run(capsys, *args: str) -> str:
    capsys.readouterr()
    assert main(["fleet", "--dry-run", *args]) == 0
    return capsys.readouterr().out


def test_dry_run_on_a_fresh_folder_plans_and_projects_without_creating_a_store(in_tmp, capsys):
    out = _dry_run(
        capsys, "-c", str(CONFIGS / "quickstart.yaml"), "--runs=0:4", "--data.num_runs=4"
    )
    assert [f"  run {i}: would train" in out for i in range(4)] == [True] * 4
    n, c, epochs = 1797, 10, 20
    signals = n * c * 4 + n * 8 + 3 * n * 4  # logits float32, labels int64, 3 float32 stats
    assert f"{epochs} recorded epochs x {size(signals)}" in out and "embeddings   none" in out
    assert "1 full x" in out and "1 weights-only x" in out  # epochs 9 and 19 of 20
    assert "(upper bounds;" in out and "for 4 runs" in out
    assert "audit cost per run: auditing costs 1,797 pool examples x 1 view x 20" in out
    assert "--signals.every_n_epochs, now 1" in out  # above 10%: the knobs are named
    assert not (in_tmp / "mlruns").exists()


def test_dry_run_names_trained_and_held_runs_and_opens_none(held_and_finished, in_tmp, capsys):
    client, exp_id, lease = held_and_finished
    out = _dry_run(capsys, "--runs=0:3", "--group=g", "--data.num_runs=4", *TINY)
    assert f"  run 0: being trained by {lease.holder}, left to it" in out
    assert "  run 1: already trained, skipped" in out and "  run 2: would train" in out
    assert len(client.search_runs([exp_id])) == 1  # the dry run opened none
    assert not (in_tmp / "mlruns" / "checkpoints").exists()


def test_resnet18_on_cifar10_projects_without_its_data(in_tmp, capsys):
    out = _dry_run(capsys, "-c", str(CONFIGS / "cifar10_resnet18.yaml"), "--runs=0:2")
    assert "60,000 x 2 views x 10 classes" in out and "20 recorded epochs" in out
    assert "1 full x 89.5 MB" in out and "9 weights-only x 44.7 MB" in out  # SGD + momentum
    assert "27% of training" in out
    lira = _dry_run(
        capsys,
        "-c",
        str(CONFIGS / "cifar10_resnet18.yaml"),
        "--runs=0:2",
        "--signals.views=[lira18]",
        "--attacks.attacks=[loss,neighbourhood]",
    )
    assert "60,000 x 18 views" in lira and "embedding 60,000 x 512 x 4 B" in lira
    assert "240% of training" in lira


@pytest.mark.slow
def test_projected_checkpoints_match_what_a_fit_keeps(in_tmp):
    args = [*TINY, "--trainer.max_epochs=2", "--checkpoints.every_n_epochs=1", "--group=size"]
    footprint, _ = project_run(*instantiate_fit(args)[:2])
    assert main(["fit", *args, "--trainer.enable_progress_bar=false"]) == 0
    (folder,) = (in_tmp / "mlruns" / "checkpoints").iterdir()
    stripped, full = ((folder / f"epoch_00{e}.ckpt").stat().st_size for e in (0, 1))
    # the projection counts tensors only; Lightning adds a few kB of loops and hparams
    assert footprint.weights_only_checkpoint < stripped < footprint.weights_only_checkpoint + 30_000
    assert footprint.full_checkpoint < full < footprint.full_checkpoint + 30_000


@pytest.mark.parametrize(
    ("data", "root"),
    [(Digits, None), (Location, "location"), (CIFAR10Partial, "cifar10_partial")],
)
def test_known_pool_size_is_the_loaded_one(data, root):
    shared = (REPO / ".." / "shared" / "data").resolve()
    if root is not None and not (shared / root).is_dir():
        pytest.skip(f"offline data not found at {shared / root}")
    folder = {} if root is None else {"root": str(shared / root)}
    assert data(**folder).pool_size == data(**folder).num_examples
