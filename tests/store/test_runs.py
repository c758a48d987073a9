"""Run-level store helpers: the experiment created once even when commands race for it;
a recipe's fingerprint and params whatever way its model class is written."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from mia_bench.lightning_cli import config_params, parse_fit_config
from mia_bench.store.runs import (
    MlflowSettings,
    canonical_config,
    config_fingerprint,
    experiment_id,
    resolve_tracking_uri,
)

QUICKSTART = ["-c", "lightning_configs/quickstart.yaml"]


class _LateLookup:
    """A client whose first lookup misses, as when another command creates the experiment
    between this command's lookup and its create."""

    def __init__(self, client: MlflowClient) -> None:
        self.client, self.missed = client, False

    def get_experiment_by_name(self, name: str):
        if not self.missed:
            self.missed = True
            return None
        return self.client.get_experiment_by_name(name)

    def create_experiment(self, *args, **kwargs):
        return self.client.create_experiment(*args, **kwargs)


def test_an_experiment_created_meanwhile_is_used_not_an_error(in_tmp):
    settings = MlflowSettings()
    client = MlflowClient(resolve_tracking_uri(settings.tracking_uri))
    first = experiment_id(client, settings)
    assert experiment_id(_LateLookup(client), settings) == first


def _recipe(*args: str) -> tuple[str, dict[str, str]]:
    config, _ = parse_fit_config([*QUICKSTART, *args])
    return config_fingerprint(config.clone().as_dict()), config_params(config)


def test_the_classifier_is_written_as_before_model_classes_could_be_chosen():
    """Runs trained before ``model.class_path`` existed keep their group: the Classifier's
    fingerprint and params do not depend on naming its class (or the data's links)."""
    fingerprint, params = _recipe()
    assert _recipe("--model.class_path=mia_bench.classifier.Classifier") == (fingerprint, params)
    assert params["cfg.model.net.class_path"] == "mia_bench.nets.MLP"
    assert not [key for key in params if key.startswith("cfg.model.init_args")]
    config, _ = parse_fit_config(QUICKSTART)
    model = canonical_config(config.clone().as_dict())["model"]
    assert "class_path" not in model and "num_classes" not in model
    assert config.model.class_path == "mia_bench.classifier.Classifier"  # as parsed


@pytest.mark.parametrize(
    "flag", ["--model.label_smoothing=0.1", "--model=lightning.LightningModule"]
)
def test_the_model_and_its_options_are_part_of_the_recipe(flag):
    assert _recipe(flag)[0] != _recipe()[0]
