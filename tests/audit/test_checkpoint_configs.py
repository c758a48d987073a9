"""``audit --checkpoint --config`` takes every shipped config as it is, and what fit logs.

A shipped config names its parts relative to its own folder (``data: data/digits.yaml``),
so the audit must parse it where it lies; the ``config.yaml`` a fit logs is complete but
carries fit's own keys (``ckpt_path``, ``weights_only``). Both reach
:func:`mia_bench.lightning_cli.instantiate_from_config` from the checkpoint audit.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from mia_bench.audit.checkpoint import signals_of_checkpoint
from mia_bench.augment import resolve_augmentations
from mia_bench.cli import main
from mia_bench.lightning_cli import instantiate_from_config
from mia_bench.store.artifacts import load_signals
from mia_bench.store.groups import client_and_experiment, group_runs
from mia_bench.store.runs import MlflowSettings

CONFIGS = Path(__file__).resolve().parents[2] / "lightning_configs"
QUICKSTART = CONFIGS / "quickstart.yaml"
TOP_LEVEL = sorted(CONFIGS.glob("*.yaml"))
BASES = {"augment": CONFIGS / "cifar10_partial_cnn.yaml", "defense": QUICKSTART}
FRAGMENTS = sorted(p for folder in BASES for p in (CONFIGS / folder).glob("*.yaml"))
QUIET = ["--signals.progress=false", "--trainer.enable_progress_bar=false"]


def _name(path: Path) -> str:
    return str(path.relative_to(CONFIGS))


def _logged_form(fit_args: list[str], capsys, folder: Path) -> Path:
    """The resolved config as ``fit`` logs it (``fit --print_config``), in a file."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *fit_args, "--print_config"])
    assert exit_info.value.code in (0, None)
    path = folder / "config.yaml"
    path.write_text(capsys.readouterr().out)
    assert "ckpt_path" in yaml.safe_load(path.read_text())  # fit's own key is there
    return path


def test_every_data_and_model_fragment_is_used_by_a_top_level_config():
    used = {yaml.safe_load(p.read_text()).get(key) for p in TOP_LEVEL for key in ("data", "model")}
    fragments = {_name(p) for folder in ("data", "model") for p in (CONFIGS / folder).glob("*")}
    assert fragments <= used


@pytest.mark.parametrize("path", TOP_LEVEL, ids=_name)
def test_top_level_config_builds_as_given_and_as_logged(path, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative references must not depend on the folder we are in
    model, data = instantiate_from_config(path)
    assert type(model.net).__module__.startswith("mia_bench.nets.")
    logged_model, logged_data = instantiate_from_config(
        _logged_form(["-c", str(path)], capsys, tmp_path)
    )
    assert type(logged_model.net) is type(model.net) and type(logged_data) is type(data)
    assert logged_model.net.state_dict().keys() == model.net.state_dict().keys()


@pytest.mark.parametrize("fragment", FRAGMENTS, ids=_name)
def test_recipe_on_its_base_builds_from_the_logged_config(fragment, tmp_path, capsys):
    base = BASES[fragment.parent.name]
    logged = _logged_form(["-c", str(base), "-c", str(fragment)], capsys, tmp_path)
    model, data = instantiate_from_config(logged)
    expected = yaml.safe_load(fragment.read_text())
    if "data" in expected:
        assert data.augment == list(resolve_augmentations(expected["data"]["init_args"]["augment"]))
    if "defense" in expected.get("model", {}):
        defense = expected["model"]["defense"]["class_path"]
        assert type(model.defense).__name__ == defense.rsplit(".", 1)[1]


def _train_quickstart_group() -> None:
    """Both runs of the quickstart group, 1 epoch each, with the config as shipped."""
    for run_index in (0, 1):
        args = ["fit", "-c", str(QUICKSTART), "--trainer.max_epochs=1", *QUIET]
        assert main([*args, f"--data.run_index={run_index}"]) == 0


@pytest.mark.slow
def test_audit_checkpoint_with_the_shipped_quickstart_config(in_tmp):
    _train_quickstart_group()
    client, exp_id = client_and_experiment(MlflowSettings())
    run0 = next(r for r in group_runs(client, exp_id, "quickstart") if r.run_index == 0)
    ckpt = in_tmp / "model.ckpt"  # outside any run's folder: config and keep must be given
    shutil.copy(in_tmp / "mlruns" / "checkpoints" / run0.run_id / "last.ckpt", ckpt)
    keep = shutil.copy(run0.artifact_dir / "keep.npy", in_tmp / "keep.npy")

    signals, _ = signals_of_checkpoint(ckpt, QUICKSTART)
    recorded = load_signals(run0.artifact_dir, 0)
    np.testing.assert_allclose(signals.logits, recorded.logits, rtol=1e-5, atol=1e-5)

    out = in_tmp / "audit.json"
    args = ["--config", str(QUICKSTART), "--keep", str(keep), "--references", "quickstart"]
    main(["audit", "--checkpoint", str(ckpt), *args, "--attacks", "loss", "--output", str(out)])
    doc = json.loads(out.read_text())
    assert doc["checkpoint"] == str(ckpt)
    assert doc["attacks"]["loss"]["num_targets"] == 1
