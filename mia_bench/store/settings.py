"""Where runs are tracked: settings without importing MLflow (the CLI's help reads them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class MlflowSettings:
    """Where runs are tracked.

    Args:
        tracking_uri: MLflow tracking store (MLflow 3 refuses a plain ``./mlruns``
            file store, hence SQLite).
        experiment_name: MLflow experiment the runs go to.
        artifact_location: folder of the experiment's artifacts (used when the
            experiment is created). With an ``http(s)://`` tracking server and this
            default, the server chooses (``mlflow-artifacts:/...`` when it serves
            artifacts): a folder of the client's machine is not where other machines
            can read them.
        checkpoint_dir: checkpoints go to ``<checkpoint_dir>/<run_id>/``.
    """

    tracking_uri: str = "sqlite:///mlruns/mlflow.db"
    experiment_name: str = "mia-bench"
    artifact_location: str = "mlruns/artifacts"
    checkpoint_dir: str = "mlruns/checkpoints"
