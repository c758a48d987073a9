"""Attacks each recorded epoch's signals and logs ``mia/<attack>/<metric>``."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback

from mia_bench.attacks import ATTACKS, AttackInputs, get_attack
from mia_bench.callbacks.signal_recorder import SignalRecorder
from mia_bench.metrics import summarize
from mia_bench.plots import plot_roc
from mia_bench.tracking import log_epoch_metrics, run_artifact_dir

DEFAULT_ATTACKS = ("loss", "confidence", "entropy", "modified_entropy", "correctness")


def find_recorder(trainer: L.Trainer) -> SignalRecorder:
    """The trainer's SignalRecorder, or a clear error."""
    for callback in trainer.callbacks:
        if isinstance(callback, SignalRecorder):
            return callback
    raise RuntimeError(
        "AttackMonitor needs a SignalRecorder callback to attack: add "
        "mia_bench.callbacks.SignalRecorder to trainer.callbacks."
    )


class AttackMonitor(Callback):
    """Runs membership attacks on every recorded epoch, as training goes.

    The target is the run being trained; its keep row (membership truth) is used only
    by the metrics. Metrics go to every logger as ``mia/<attack>/<metric>`` with
    step = epoch; at the end of fit a log-log ROC plot of all attacks of the last
    recorded epoch is logged as ``roc/epoch_XXX.png``.

    Args:
        attacks: names from ``mia_bench.attacks.ATTACKS``.
        fprs: FPRs at which TPR is reported.
        plot: log the ROC plot at the end of fit.
    """

    def __init__(
        self,
        attacks: Sequence[str] = DEFAULT_ATTACKS,
        fprs: Sequence[float] = (0.001, 0.01),
        plot: bool = True,
    ) -> None:
        self.attacks = [get_attack(name) for name in attacks]
        self.fprs = tuple(fprs)
        self.plot = plot
        self.last_scores: dict[str, np.ndarray] = {}
        self.last_epoch: int | None = None
        self.last_metrics: dict[str, float] = {}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        signals = find_recorder(trainer).record_if_due(trainer, pl_module)
        if signals is None:
            return
        keep = trainer.datamodule.keep
        inputs = AttackInputs(
            logits=signals.logits, labels=signals.labels, embeddings=signals.embeddings
        )
        metrics: dict[str, float] = {}
        self.last_scores = {}
        for attack in self.attacks:
            scores = attack(inputs)
            self.last_scores[attack.name] = scores
            for key, value in summarize(scores, keep, self.fprs).items():
                metrics[f"mia/{attack.name}/{key}"] = value
        self.last_epoch = signals.epoch
        self.last_metrics = metrics
        log_epoch_metrics(trainer, metrics)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not (self.plot and self.last_scores):
            return
        path = run_artifact_dir(trainer) / "roc" / f"epoch_{self.last_epoch:03d}.png"
        plot_roc(
            self.last_scores,
            trainer.datamodule.keep,
            path,
            title=f"membership attacks, epoch {self.last_epoch}",
        )


__all__ = ["ATTACKS", "AttackMonitor", "DEFAULT_ATTACKS", "find_recorder"]
