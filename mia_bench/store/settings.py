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
            experiment is created).
        checkpoint_dir: checkpoints go to ``<checkpoint_dir>/<run_id>/``.
    """

    tracking_uri: str = "sqlite:///mlruns/mlflow.db"
    experiment_name: str = "mia-bench"
    artifact_location: str = "mlruns/artifacts"
    checkpoint_dir: str = "mlruns/checkpoints"
