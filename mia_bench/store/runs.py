"""MLflow runs of a group: create one per trained model, or find it again to resume."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mia_bench.store.database import open_store
from mia_bench.store.settings import MlflowSettings


def resolve_tracking_uri(tracking_uri: str) -> str:
    """The URI to give MLflow, once the store is known to work (see :func:`open_store`)."""
    return open_store(tracking_uri)


# MLflow's UI opens an experiment of this kind on its training runs, not on GenAI traces
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def experiment_id(client: MlflowClient, settings: MlflowSettings) -> str:
    """Id of the settings' experiment, created (with its artifact folder) if new.

    It is tagged as a model-training experiment (:data:`EXPERIMENT_KIND`), so that the
    MLflow UI shows its runs and their charts first.
    """
    found = client.get_experiment_by_name(settings.experiment_name)
    if found is not None:
        if not all(found.tags.get(k) == v for k, v in EXPERIMENT_KIND.items()):
            for key, value in EXPERIMENT_KIND.items():
                client.set_experiment_tag(found.experiment_id, key, value)
        return found.experiment_id
    location: str | None = settings.artifact_location
    served = settings.tracking_uri.startswith(("http://", "https://"))
    if served and location == MlflowSettings.artifact_location:
        location = None  # the server's artifact root, which every machine reaches
    elif "://" not in location:
        location = Path(location).resolve().as_uri()
    try:
        return client.create_experiment(
            settings.experiment_name, artifact_location=location, tags=EXPERIMENT_KIND
        )
    except MlflowException:  # another command created it at the same moment
        found = client.get_experiment_by_name(settings.experiment_name)
        if found is None:
            raise
        return found.experiment_id


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


# Settings that change where or how visibly a run is trained, not what it learns.
FINGERPRINT_IGNORES = (
    "data.init_args.run_index",
    "data.init_args.root",
    "data.init_args.download",
    "data.init_args.num_workers",
    "ckpt_path",
    "weights_only",
    "config",
    "group",
    "mlflow",
    "checkpoints",
    "trainer.enable_checkpointing",
    "attacks",
    "properties",
    "signals.init_args.progress",
    "signals.progress",
    "signals.forward_batch_size",  # memory of the signal pass, not its result
    "model.compile",  # how the steps run (like the device), not what is learned
    "model.compile_mode",
    "model.compile_backend",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.default_root_dir",
    "trainer.logger",
    "trainer.accelerator",
    "trainer.devices",
)


CLASSIFIER = "mia_bench.classifier.Classifier"  # the default model, see canonical_config
LINKED_MODEL_ARGS = ("num_classes", "input_shape")  # set from the data by fit's links


def canonical_config(config: Any) -> Any:
    """A resolved config with mia-bench's Classifier written without its class.

    ``model`` may name any LightningModule (``model.class_path``); the default, the
    Classifier, is written as it was before a model class could be chosen
    (``model: {net: ..., optimizer: ...}``, without the arguments linked from the data),
    so the fingerprints and params of its runs stay what they were. A model of another
    class keeps its ``class_path`` and ``init_args``.

    Args:
        config: a dict, or a jsonargparse namespace (cloned, never changed in place).

    >>> model = {"class_path": CLASSIFIER, "init_args": {"net": 1, "num_classes": 10}}
    >>> canonical_config({"model": model})
    {'model': {'net': 1}}
    >>> canonical_config({"model": {"class_path": "my.Module", "init_args": {}}})["model"]
    {'class_path': 'my.Module', 'init_args': {}}
    """
    model = config.get("model")
    if model is None or model.get("class_path") != CLASSIFIER:
        return config
    args = model.get("init_args") or {}
    args = args.clone() if hasattr(args, "clone") else dict(args)
    for key in LINKED_MODEL_ARGS:
        args.pop(key, None)
    if model.get("__path__") is not None:  # the file the model section came from
        args["__path__"] = model["__path__"]
    config = config.clone() if hasattr(config, "clone") else dict(config)
    config["model"] = args
    return config


def config_fingerprint(config: Mapping[str, Any]) -> str:
    """A hash of the resolved config of a run, the same for every run of one recipe.

    Keys in ``FINGERPRINT_IGNORES`` (the run index, data location, tracking settings,
    the attacks run while training, progress display, device, ``torch.compile``) are
    left out; precision (``trainer.precision``) and ``model.memory_format`` are kept.
    The config is read in its :func:`canonical_config` form.

    >>> a = {"data": {"init_args": {"run_index": 0, "pkeep": 0.5}}, "seed_everything": 1}
    >>> b = {"data": {"init_args": {"run_index": 7, "pkeep": 0.5}}, "seed_everything": 1}
    >>> config_fingerprint(a) == config_fingerprint(b)
    True
    >>> config_fingerprint(a) == config_fingerprint({**a, "seed_everything": 2})
    False
    """
    kept = _drop(canonical_config(config), "")
    # LightningCLI's --optimizer/--lr_scheduler, turned off (always None): hashed as before
    kept |= {key: None for key in ("optimizer", "lr_scheduler") if key not in kept}
    text = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _drop(value: Any, prefix: str) -> Any:
    if not isinstance(value, Mapping):
        return value
    out = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if name not in FINGERPRINT_IGNORES:
            out[key] = _drop(item, f"{name}.")
    return out


def find_run(
    client: MlflowClient, exp_id: str, group: str, run_index: int, fingerprint: str | None
) -> str | None:
    """The latest unfinished ``fit`` run of this group, index and fingerprint, or None.

    Runs of other commands (``test``, ``validate``) and other recipes are never resumed,
    and neither is a FINISHED run.
    """
    query = f"tags.`mia.group` = '{group}' and tags.`mia.run_index` = '{run_index}'"
    runs = client.search_runs(
        [exp_id], filter_string=query, order_by=["attributes.start_time DESC"]
    )
    for run in runs:
        tags = run.data.tags
        if tags.get("mia.command", "fit") != "fit" or run.info.status == "FINISHED":
            continue
        if tags.get("mia.fingerprint") == fingerprint:
            return run.info.run_id
    return None


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
