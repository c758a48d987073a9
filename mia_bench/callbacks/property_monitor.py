"""Runs property inference on every recorded epoch's embeddings, layer by layer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback

from mia_bench.callbacks.attack_monitor import find_recorder
from mia_bench.checks import check_membership_data
from mia_bench.plots import plot_layer_depth
from mia_bench.property_inference import MAX_AUX, MAX_DIM, layer_property_inference
from mia_bench.store.artifacts import EpochSignals, run_artifact_dir
from mia_bench.tracking import log_epoch_metrics


def select_properties(available: dict[str, np.ndarray], names: Sequence[str]) -> dict:
    """The properties asked for by name; ``["all"]`` means every one available.

    Raises:
        ValueError: naming the unknown properties and listing the available ones.

    >>> p = {"a": np.zeros(2), "b": np.ones(2)}
    >>> list(select_properties(p, ["all"])), list(select_properties(p, ["b"]))
    (['a', 'b'], ['b'])
    """
    if list(names) == ["all"]:
        return dict(available)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(
            f"unknown properties {unknown}; this dataset offers {sorted(available) or 'none'}. "
            "Derived ones are declared with --data.property_classes '{name: [classes]}'."
        )
    return {n: available[n] for n in names}


class PropertyMonitor(Callback):
    """Property inference (Embedding Attack Project) on the recorded layers, every epoch.

    For each property and each layer the SignalRecorder captures, an attack model is
    trained on the target's embeddings of its non-members (the attacker's auxiliary
    data) and predicts the property of its members (see
    :mod:`mia_bench.property_inference`). Metrics go to every logger with step = epoch
    as ``property/<name>/<layer>/{acc,balanced_acc,auc}`` and
    ``property/<name>/majority_acc``; at the end of fit a plot of AUC against layer
    depth for each property of the last recorded epoch is saved as the run artifact
    ``property/epoch_XXX.png``.

    With no ``names`` (the default) the callback does nothing, so every config can carry
    it.

    Args:
        names: properties of the datamodule (``datamodule.properties()``) to infer;
            ``["all"]`` for every one. A property equal to the training label is refused.
        max_dim: layers wider than this are reduced by PCA first.
        max_aux: cap on the auxiliary examples the attack model trains on.
        model: attack model, ``"logistic"`` or ``"mlp"``.
        plot: save the depth plot at the end of fit.
    """

    def __init__(
        self,
        names: Sequence[str] = (),
        max_dim: int = MAX_DIM,
        max_aux: int | None = MAX_AUX,
        model: str = "logistic",
        plot: bool = True,
    ) -> None:
        self.names = list(names)
        self.options: dict[str, Any] = {"max_dim": max_dim, "max_aux": max_aux, "model": model}
        self.plot = plot
        self.last: dict[str, dict[str, float]] = {}
        self.last_epoch: int | None = None

    @property
    def needs_embeddings(self) -> bool:
        """Whether properties are inferred (from the embeddings the SignalRecorder records)."""
        return bool(self.names)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self.names:  # checked before the first epoch
            find_recorder(trainer)
            needs = ("keep", "properties", "pool")
            check_membership_data(trainer.datamodule, needs, "PropertyMonitor")

    def _properties(self, trainer: L.Trainer) -> dict[str, np.ndarray]:
        dm = trainer.datamodule
        found = select_properties(dm.properties(), self.names)
        labels = np.asarray(dm.pool.labels)
        same = [n for n, p in found.items() if np.array_equal(np.asarray(p), labels)]
        if same:
            raise ValueError(
                f"properties {same} equal the training labels: property inference is "
                "about what the target was not trained to predict; pick another"
            )
        return found

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.names:
            self._infer(trainer, find_recorder(trainer).record_if_due(trainer, pl_module))

    def _infer(self, trainer: L.Trainer, signals: EpochSignals | None) -> None:
        if signals is None:
            return
        layers = find_recorder(trainer).layers
        results = layer_property_inference(
            signals.embeddings,
            self._properties(trainer),
            trainer.datamodule.keep,
            layers,
            **self.options,
        )
        metrics: dict[str, float] = {}
        for name, per_layer in results.items():
            for layer, result in per_layer.items():
                for key in ("acc", "balanced_acc", "auc"):
                    metrics[f"property/{name}/{layer}/{key}"] = getattr(result, key)
                metrics[f"property/{name}/majority_acc"] = result.majority_acc
        self.last = {n: {layer: r.auc for layer, r in d.items()} for n, d in results.items()}
        self.last_epoch = signals.epoch
        log_epoch_metrics(trainer, metrics, epoch=signals.epoch)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.names:
            return
        recorder = find_recorder(trainer)
        recorder.record_final(trainer, pl_module)
        if recorder.latest is not None and recorder.latest.epoch != self.last_epoch:
            self._infer(trainer, recorder.latest)
        if self.plot and self.last:
            path = run_artifact_dir(trainer) / "property" / f"epoch_{self.last_epoch:03d}.png"
            plot_layer_depth(
                self.last,
                path,
                ylabel="property AUC",
                title=f"property inference by layer, epoch {self.last_epoch}",
            )
