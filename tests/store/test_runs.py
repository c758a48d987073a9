"""Run-level store helpers: the experiment created once even when commands race for it."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from mia_bench.store.runs import MlflowSettings, experiment_id, resolve_tracking_uri


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
