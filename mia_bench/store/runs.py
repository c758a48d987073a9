"""MLflow runs of a group: create one per trained model, or find it again to resume."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from mia_bench.store.database import open_store
from mia_bench.store.leases import acquire_training_lease


@dataclass
class MlflowSettings:
    """Where runs are tracked.

    Args:
        tracking_uri: MLflow tracking store (MLflow 3 refuses a plain ``./mlruns``
            file store, hence SQLite).
        experiment_name: MLflow experiment the runs go to.
        artifact_location: folder of the experiment's artifacts (used when the
            experiment is created).
        checkpoint_dir: checkpoints go to ``<checkpoint_dir>/<run_id>/``.
    """

    tracking_uri: str = "sqlite:///mlruns/mlflow.db"
    experiment_name: str = "mia-bench"
    artifact_location: str = "mlruns/artifacts"
    checkpoint_dir: str = "mlruns/checkpoints"


def resolve_tracking_uri(tracking_uri: str) -> str:
    """The URI to give MLflow, once the store is known to work (see :func:`open_store`)."""
    return open_store(tracking_uri)


def experiment_id(client: MlflowClient, settings: MlflowSettings) -> str:
    """Id of the settings' experiment, created (with its artifact folder) if new."""
    found = client.get_experiment_by_name(settings.experiment_name)
    if found is not None:
        return found.experiment_id
    location = settings.artifact_location
    if "://" not in location:
        location = Path(location).resolve().as_uri()
    return client.create_experiment(settings.experiment_name, artifact_location=location)


def provenance_tags() -> dict[str, str]:
    """Git commit and library versions, as MLflow tags."""
    tags = {}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
        if commit.returncode == 0:
            tags["mlflow.source.git.commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    for package in ("mia-bench", "torch", "lightning", "mlflow", "numpy"):
        try:
            tags[f"mia.version.{package}"] = version(package)
        except PackageNotFoundError:
            pass
    return tags


def design_tags(group: str, info: dict[str, Any]) -> dict[str, str]:
    """The ``mia.*`` tags that identify a run's place in its group."""
    return {"mia.group": group, **{f"mia.{k}": str(v) for k, v in info.items()}}


def find_run(client: MlflowClient, exp_id: str, group: str, run_index: int) -> str | None:
    """Most recent run of ``group`` with this ``run_index``, or None."""
    query = f"tags.`mia.group` = '{group}' and tags.`mia.run_index` = '{run_index}'"
    runs = client.search_runs(
        [exp_id], filter_string=query, order_by=["attributes.start_time DESC"], max_results=1
    )
    return runs[0].info.run_id if runs else None


def open_run(
    settings: MlflowSettings, group: str, info: dict[str, Any], resume: bool, lease: bool = True
) -> str:
    """Run id to log to: a new run, or (``resume``) the group's earlier run of this index.

    Args:
        settings: tracking store and experiment.
        group: the group's name (tag ``mia.group``).
        info: the data module's ``membership_info()`` (run_index, num_runs, ...).
        resume: look up the earlier run instead of creating one.
        lease: first take the run's lease (held until ``release_held()`` or exit), and
            refuse a fresh start of a FINISHED run (``fit`` does; validate/test do not).

    Raises:
        FileNotFoundError: resuming, but the group has no run of this index.
        LeaseHeld: another live process trains this run.
        AlreadyTrained: not ``resume``, and the group has this run FINISHED.
    """
    client = MlflowClient(resolve_tracking_uri(settings.tracking_uri))
    exp_id = experiment_id(client, settings)
    run_index = info["run_index"]
    if lease:
        acquire_training_lease(client, exp_id, group, run_index, resume)
    if resume:
        run_id = find_run(client, exp_id, group, run_index)
        if run_id is None:
            raise FileNotFoundError(
                f"nothing to resume: experiment {settings.experiment_name!r} in "
                f"{settings.tracking_uri} has no run of group {group!r} with run_index "
                f"{run_index}. Drop --ckpt_path to start it, or pass the right --group."
            )
        client.update_run(run_id, status="RUNNING")
        return run_id
    tags = design_tags(group, info) | provenance_tags()
    run = client.create_run(exp_id, run_name=f"{group}-run{run_index:03d}", tags=tags)
    return run.info.run_id


class MetricHistory:
    """Runs' metric values by step, each (run, metric) fetched from MLflow once.

    >>> class Client:  # a stand-in for MlflowClient
    ...     calls = 0
    ...     def get_metric_history(self, run_id, key):
    ...         Client.calls += 1
    ...         return [type("M", (), {"step": s, "value": v})() for s, v in [(0, .5), (1, .7)]]
    >>> h = MetricHistory(Client())
    >>> h.at("r", "test/acc", 1), h.at("r", "test/acc", "last"), h.at("r", "test/acc", 5)
    (0.7, 0.7, nan)
    >>> Client.calls
    1
    """

    def __init__(self, client: MlflowClient) -> None:
        self.client = client
        self._by_step: dict[tuple[str, str], dict[int, float]] = {}

    def at(self, run_id: str, key: str, step: int | str) -> float:
        """The value logged at ``step`` (``"last"``: the highest step), else NaN."""
        if (run_id, key) not in self._by_step:  # a resumed run may relog a step: last wins
            history = self.client.get_metric_history(run_id, key)
            self._by_step[run_id, key] = {m.step: m.value for m in history}
        values = self._by_step[run_id, key]
        if step == "last":
            return values[max(values)] if values else float("nan")
        return values.get(int(step), float("nan"))
