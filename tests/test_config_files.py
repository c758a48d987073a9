"""Packaged configs: found by name, copied out, and inside the wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mia_bench.cli import main
from mia_bench.config_files import PACKAGED, config_path, packaged_names, resolve_configs
from mia_bench.errors import UserError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "name",
    ["quickstart", "quickstart.yaml", "lightning_configs/quickstart.yaml"],
)
def test_a_name_finds_the_packaged_config_from_anywhere(name, in_tmp):
    assert config_path(name) == str(PACKAGED / "quickstart.yaml")


def test_names_reach_into_subfolders_and_a_file_there_wins(in_tmp):
    assert config_path("defense/dp_sgd") == str(PACKAGED / "defense" / "dp_sgd.yaml")
    (in_tmp / "quickstart.yaml").write_text("trainer: {max_epochs: 1}\n")
    assert config_path("quickstart.yaml") == "quickstart.yaml"  # the user's own file
    assert "quickstart" in packaged_names() and "augment/crop" in packaged_names()


@pytest.mark.parametrize("name", ["nope", "../configs/quickstart", "augment/../quickstart"])
def test_an_unknown_name_is_a_one_line_error(name, in_tmp):
    with pytest.raises(UserError, match="no such file, and no packaged config") as err:
        config_path(name)
    assert "\n" not in str(err.value) and "mia-bench configs --list" in str(err.value)


def test_every_way_of_giving_a_config_is_resolved(in_tmp):
    q = str(PACKAGED / "quickstart.yaml")
    argv = ["-c", "quickstart", "--config", "augment/crop", "--config=model/mlp", "--seed=1"]
    assert resolve_configs(argv) == [
        "-c",
        q,
        "--config",
        str(PACKAGED / "augment" / "crop.yaml"),
        f"--config={PACKAGED / 'model' / 'mlp.yaml'}",
        "--seed=1",
    ]


def test_configs_copies_them_out_once_and_lists_them(in_tmp, capsys):
    assert main(["configs", "mine"]) == 0
    copied = sorted(str(p.relative_to(in_tmp / "mine")) for p in (in_tmp / "mine").rglob("*.yaml"))
    assert copied == sorted(f"{n}.yaml" for n in packaged_names())
    assert main(["configs", "mine"]) == 2  # nothing overwritten without --force
    assert "exists" in capsys.readouterr().err
    (in_tmp / "mine" / "quickstart.yaml").write_text("edited")
    assert main(["configs", "mine", "--force"]) == 0
    assert (in_tmp / "mine" / "quickstart.yaml").read_text().startswith("#")
    assert main(["configs", "--list"]) == 0
    listing = capsys.readouterr().out
    assert "quickstart" in listing and "an MLP on scikit-learn's bundled digits" in listing


@pytest.mark.slow
def test_fit_by_config_name_in_an_empty_folder(in_tmp):
    args = ["fit", "-c", "quickstart", "--trainer.max_epochs=1", "--data.batch_size=256"]
    assert main([*args, "--trainer.enable_progress_bar=false"]) == 0
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{in_tmp}/mlruns/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("mia-bench").experiment_id])
    assert run.data.tags["mia.group"] == "quickstart"  # the config's name, as from a file


@pytest.mark.slow
def test_the_wheel_carries_configs_and_notebook_and_fits_from_them(tmp_path):
    """The wheel alone (not the checkout) runs ``mia-bench fit -c quickstart``."""
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*build, "-w", str(wheels), str(REPO)], check=True, capture_output=True)
    (wheel,) = wheels.glob("mia_bench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "mia_bench/configs/quickstart.yaml" in names
    assert "mia_bench/configs/defense/dp_sgd.yaml" in names
    assert "mia_bench/notebooks/compare.ipynb" in names and "mia_bench/default.yaml" in names
    site = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site)]
    subprocess.run([*install, str(wheel)], check=True, capture_output=True)
    work = tmp_path / "work"
    work.mkdir()
    env = os.environ | {"PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    where = subprocess.run(
        [sys.executable, "-c", "import mia_bench; print(mia_bench.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(site))  # the wheel's copy, not the checkout
    fit = [sys.executable, "-m", "mia_bench", "fit", "-c", "quickstart", "--trainer.max_epochs=1"]
    done = subprocess.run(fit, cwd=work, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "membership inference, run 0 of group 'quickstart'" in done.stdout
