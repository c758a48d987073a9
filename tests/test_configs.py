"""Every config in lightning_configs/ parses, alone or as the fragment it is.

The recipe fragments (``augment/``, ``defense/``) are parsed on a base, with their
contents checked, in ``test_augment.py`` and ``test_defenses.py``; sweep files in
``test_sweep.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mia_bench.lightning_cli import parse_fit_config

CONFIGS = Path(__file__).resolve().parents[1] / "lightning_configs"

TOP_LEVEL = sorted(CONFIGS.glob("*.yaml"))
RECIPES = [*(CONFIGS / "augment").glob("*.yaml"), *(CONFIGS / "defense").glob("*.yaml")]
DATA = sorted((CONFIGS / "data").glob("*.yaml"))
MODELS = sorted((CONFIGS / "model").glob("*.yaml"))


def _name(path: Path) -> str:
    return str(path.relative_to(CONFIGS))


def test_every_config_folder_is_covered():
    covered = {*TOP_LEVEL, *RECIPES, *DATA, *MODELS}
    sweeps = set((CONFIGS / "sweeps").glob("*.yaml"))
    assert set(CONFIGS.rglob("*.yaml")) == covered | sweeps
    names = {p.stem for p in TOP_LEVEL}
    assert {"celeba_cnn", "snacks_vit", "imdb_bert", "agnews_transformer"} <= names
    assert {"purchase100_mlp", "cifar10_cnn", "location_mlp"} <= names


@pytest.mark.parametrize("path", TOP_LEVEL, ids=_name)
def test_top_level_config_parses(path: Path):
    config, group = parse_fit_config(["-c", str(path)])
    assert group == path.stem
    assert config.model.init_args.net.class_path.startswith("mia_bench.nets.")
    assert config.data.class_path.startswith("mia_bench.data.")


@pytest.mark.parametrize("path", DATA, ids=_name)
def test_data_config_parses(path: Path):
    config, _ = parse_fit_config(["--data", str(path)])
    assert config.data.class_path.startswith("mia_bench.data.")


@pytest.mark.parametrize("path", MODELS, ids=_name)
def test_model_config_parses(path: Path):
    config, _ = parse_fit_config(["--model", str(path)])
    assert config.model.init_args.net.class_path.startswith("mia_bench.nets.")
