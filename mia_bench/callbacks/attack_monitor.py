"""Attacks each recorded epoch's signals and logs ``mia/<attack>/<metric>``."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_warn

from mia_bench.attacks import get_attack
from mia_bench.audit.engine import (
    audit_target,
    flatten,
    layer_depth_curve,
    needs_embeddings,
    needs_of,
)
from mia_bench.callbacks.signal_recorder import SignalRecorder
from mia_bench.checks import check_membership_data
from mia_bench.metrics import DEFAULT_FPRS
from mia_bench.plots import plot_layer_depth, plot_roc
from mia_bench.store.artifacts import EpochSignals, run_artifact_dir
from mia_bench.store.groups import GroupRun, group_runs
from mia_bench.store.references import (
    ReferenceNeeds,
    References,
    check_same_pool,
    load_references,
)
from mia_bench.tracking import log_epoch_metrics

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


def _mlflow(trainer: L.Trainer) -> MLFlowLogger:
    for logger in trainer.loggers:
        if isinstance(logger, MLFlowLogger):
            return logger
    raise RuntimeError(
        "AttackMonitor(references=...) finds reference groups through MLflow: "
        "attach an MLFlowLogger (mia-bench fit does)."
    )


class AttackMonitor(Callback):
    """Runs membership attacks on every recorded epoch, as training goes.

    The target is the run being trained; its keep row (membership truth) is used only
    by the metrics (and to choose RMIA's population among its non-members). Metrics go
    to every logger as ``mia/<attack>/<metric>`` with step = epoch; at the end of fit a
    log-log ROC plot of all attacks of the last recorded epoch is saved as the run
    artifact ``roc/epoch_XXX.png``.

    Layer-depth leakage (Embedding Attack Project): with ``nn_embedding`` among the attacks
    and several layers recorded by the SignalRecorder, the embedding attack runs at every
    recorded layer (``mia/nn_embedding_<layer>/...``, needs references), and at the end of
    fit ``mia_depth.png`` plots its AUC against layer depth, one line per recorded epoch.

    With ``references`` (names of groups in the same MLflow experiment), attacks that
    need reference models (LiRA, RMIA, ...) run too. At each epoch the references'
    signals of the *same* epoch are used (``reference_epoch="same"``, epoch-matched as
    the target), or each reference's last recorded epoch (``"last"``). A reference run
    without signals for that epoch is left out; with fewer than ``min_references`` left,
    the reference attacks skip that epoch with a warning. The target's own run (and, in
    its own group, its run index) is never a reference.

    Args:
        attacks: names from ``mia_bench.attacks.ATTACKS``.
        fprs: FPRs at which TPR is reported.
        plot: save the ROC plot at the end of fit.
        references: reference group names (None: reference-free attacks only).
        reference_epoch: ``"same"`` or ``"last"``.
        min_references: fewest references a reference attack runs with.
    """

    def __init__(
        self,
        attacks: Sequence[str] = DEFAULT_ATTACKS,
        fprs: Sequence[float] = DEFAULT_FPRS,
        plot: bool = True,
        references: Sequence[str] | None = None,
        reference_epoch: str = "same",
        min_references: int = 2,
    ) -> None:
        if reference_epoch not in ("same", "last"):
            raise ValueError(f"reference_epoch must be 'same' or 'last', got {reference_epoch!r}")
        self.attacks = [get_attack(name) for name in attacks]
        self.fprs = tuple(fprs)
        self.plot = plot
        self.references = list(references or [])
        self.reference_epoch = reference_epoch
        self.min_references = min_references
        self._reference_runs: list[GroupRun] | None = None
        self.last_scores: dict[str, np.ndarray] = {}
        self.last_epoch: int | None = None
        self.last_metrics: dict[str, float] = {}
        self.depth_curves: dict[str, dict[str, float]] = {}  # "epoch N" -> {layer: AUC}

    @property
    def needs_embeddings(self) -> bool:
        """Whether an attack reads layer embeddings (the SignalRecorder then records them)."""
        return needs_embeddings(self.attacks)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":  # what the first epoch's attacks need, checked before it
            find_recorder(trainer)
            check_membership_data(trainer.datamodule, ("keep",), "AttackMonitor")

    def _find_reference_runs(self, trainer: L.Trainer) -> list[GroupRun]:
        logger = _mlflow(trainer)
        client = logger.experiment
        tags = client.get_run(logger.run_id).data.tags
        runs = []
        for group in self.references:
            found = group_runs(client, logger.experiment_id, group)
            if not found:
                raise ValueError(
                    f"reference group {group!r} has no runs in experiment "
                    f"{logger.experiment_id}: train it first (mia-bench fleet ... --group {group})"
                )
            check_same_pool(tags, found)
            runs += found
        own_group, own_index = tags.get("mia.group"), tags.get("mia.run_index")
        return [
            r
            for r in runs
            if r.run_id != logger.run_id
            and not (r.group == own_group and str(r.run_index) == own_index)
        ]

    def _load_references(
        self, trainer: L.Trainer, epoch: int, needs: ReferenceNeeds, keep: np.ndarray
    ) -> References | None:
        if not self.references or not any(a.needs_references for a in self.attacks):
            return None
        if self._reference_runs is None:
            self._reference_runs = self._find_reference_runs(trainer)
        wanted = epoch if self.reference_epoch == "same" else "last"
        refs = load_references(self._reference_runs, wanted, needs, target_keep=keep)
        count = 0 if refs is None else len(refs.run_ids)
        if count < self.min_references:
            rank_zero_warn(
                f"epoch {epoch}: only {count} reference runs have signals for epoch "
                f"{wanted} (need {self.min_references}); reference attacks skip this epoch"
            )
            return None
        return refs

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._attack(trainer, find_recorder(trainer).record_if_due(trainer, pl_module))

    def _attack(self, trainer: L.Trainer, signals: EpochSignals | None) -> None:
        if signals is None:
            return
        recorder = find_recorder(trainer)
        keep = trainer.datamodule.keep
        needs = needs_of(self.attacks, recorder.layers)
        layers = needs.layers
        refs = self._load_references(trainer, signals.epoch, needs, keep)
        audit = audit_target(signals, keep, refs, self.attacks, self.fprs, layers)
        metrics = flatten(audit.metrics, "mia/") | flatten(audit.reports, "mia/")
        if refs is not None:
            metrics["mia/num_references"] = float(len(refs.run_ids))
        self.last_scores, self.last_epoch, self.last_metrics = audit.scores, signals.epoch, metrics
        curve = layer_depth_curve(metrics, recorder.layers, prefix="mia/")
        if len(curve) > 1:
            self.depth_curves[f"epoch {signals.epoch}"] = curve
        log_epoch_metrics(trainer, metrics, epoch=signals.epoch)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the last epoch, when a callback stopped training after the recorder had run
        recorder = find_recorder(trainer)
        recorder.record_final(trainer, pl_module)
        if recorder.latest is not None and recorder.latest.epoch != self.last_epoch:
            self._attack(trainer, recorder.latest)
        if not (self.plot and self.last_scores):
            return
        if self.depth_curves:
            plot_layer_depth(
                self.depth_curves,
                run_artifact_dir(trainer) / "mia_depth.png",
                ylabel="membership AUC (nn_embedding)",
                title="membership leakage by layer depth",
            )
        path = run_artifact_dir(trainer) / "roc" / f"epoch_{self.last_epoch:03d}.png"
        plot_roc(
            self.last_scores,
            trainer.datamodule.keep,
            path,
            title=f"membership attacks, epoch {self.last_epoch}",
        )
