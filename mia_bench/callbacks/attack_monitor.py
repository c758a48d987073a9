"""Attacks each recorded epoch's signals and logs ``mia/<metric>/<attack>``."""

from __future__ import annotations

import json
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
from mia_bench.empirical_privacy import DELTA
from mia_bench.metric_names import mlflow_metrics, mlflow_params
from mia_bench.metrics import DEFAULT_FPRS
from mia_bench.plots import plot_layer_depth, plot_roc
from mia_bench.store.artifacts import EpochSignals, atomic_write
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
    to every logger as ``mia/<metric>/<attack>`` with step = epoch (see
    :mod:`mia_bench.metric_names`), the numbers of members and non-members once as params;
    every number of every attacked epoch is kept in the run artifact ``mia/history.json``
    (:attr:`history`); with a progress bar, it shows the headline attack's AUC. At the end
    of fit a log-log ROC plot of all attacks of the last recorded epoch is saved as the
    run artifact ``roc/epoch_XXX.png``.

    Layer-depth leakage (Embedding Attack Project): with ``nn_embedding`` among the attacks
    and several layers recorded by the SignalRecorder, the embedding attack runs at every
    recorded layer (``mia/auc/nn_embedding_<layer>``, ...; needs references), and at the end of
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
        headline: the attack shown in the progress bar and first in summaries (default:
            the first of ``attacks``).
        bootstrap: resamples of the bootstrap intervals of each attack's AUC and TPR,
            kept in ``mia/history.json`` and shown in the end-of-fit table (0: none; the
            exact intervals of the TPR are always computed).

    Every epoch also logs ``privacy/epsilon_lower_bound``: the largest epsilon an
    attack's ROC certifies (:mod:`mia_bench.empirical_privacy`), at DP-SGD's delta when
    the run uses it (beside the accountant's ``privacy/epsilon``), else at 1e-5.
    """

    def __init__(
        self,
        attacks: Sequence[str] = DEFAULT_ATTACKS,
        fprs: Sequence[float] = DEFAULT_FPRS,
        plot: bool = True,
        references: Sequence[str] | None = None,
        reference_epoch: str = "same",
        min_references: int = 2,
        headline: str | None = None,
        bootstrap: int = 100,
    ) -> None:
        if reference_epoch not in ("same", "last"):
            raise ValueError(f"reference_epoch must be 'same' or 'last', got {reference_epoch!r}")
        self.attacks = [get_attack(name) for name in attacks]
        if headline is not None and headline not in attacks:
            raise ValueError(
                f"headline {headline!r} is not one of the attacks {list(attacks)}: pass one "
                "of them, or add it to --attacks.attacks"
            )
        self.headline = headline or (attacks[0] if attacks else None)
        self.fprs = tuple(fprs)
        self.plot = plot
        self.references = list(references or [])
        self.reference_epoch = reference_epoch
        self.min_references = min_references
        self.bootstrap = bootstrap
        self._reference_runs: list[GroupRun] | None = None
        self.last_scores: dict[str, np.ndarray] = {}
        self.last_epoch: int | None = None
        self.last_metrics: dict[str, float] = {}
        self.depth_curves: dict[str, dict[str, float]] = {}  # "epoch N" -> {layer: AUC}
        self.history: dict[int, dict[str, dict[str, float]]] = {}  # epoch -> attack -> metric
        self._params_logged = False

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
        signals = find_recorder(trainer).record_if_due(trainer, pl_module)
        if self._attack(trainer, signals) and self.headline in self.history[signals.epoch]:
            self._show_headline(trainer, pl_module, self.history[signals.epoch][self.headline])

    def _show_headline(self, trainer: L.Trainer, pl_module: L.LightningModule, metrics) -> None:
        """The headline attack's AUC in the progress bar (only there: not a logged metric)."""
        if getattr(trainer, "progress_bar_callback", None) is not None:
            name = f"auc({self.headline})"
            pl_module.log(name, metrics["auc"], prog_bar=True, logger=False, on_epoch=True)

    @staticmethod
    def delta(pl_module: L.LightningModule | None) -> float:
        """The delta of the empirical epsilon: the DP defense's, else 1e-5."""
        defense = getattr(pl_module, "defense", None)
        delta = getattr(defense, "delta", None)
        if delta is None and getattr(defense, "num_examples", None):
            return 1.0 / defense.num_examples  # its accountant's (DPSGD(delta=None))
        return DELTA if delta is None else float(delta)

    def _attack(self, trainer: L.Trainer, signals: EpochSignals | None) -> bool:
        """Attack one epoch's signals and log the numbers; False when there were none."""
        if signals is None:
            return False
        recorder = find_recorder(trainer)
        keep = trainer.datamodule.keep
        needs = needs_of(self.attacks, recorder.layers)
        layers = needs.layers
        refs = self._load_references(trainer, signals.epoch, needs, keep)
        audit = audit_target(
            signals, keep, refs, self.attacks, self.fprs, layers, self.bootstrap,
            self.delta(trainer.lightning_module),
        )  # fmt: skip
        metrics = mlflow_metrics(audit.metrics) | mlflow_metrics(audit.reports)
        bounds = [m["epsilon_lower_bound"] for m in audit.metrics.values()]
        if bounds:
            metrics["privacy/epsilon_lower_bound"] = float(max(bounds))
        if refs is not None:
            metrics["mia/num_references"] = float(len(refs.run_ids))
        self.last_scores, self.last_epoch, self.last_metrics = audit.scores, signals.epoch, metrics
        nested = audit.metrics | audit.reports
        self.history[signals.epoch] = {
            a: {k: float(v) for k, v in m.items()} for a, m in nested.items()
        }
        curve = layer_depth_curve(flatten(audit.metrics), recorder.layers)
        if len(curve) > 1:
            self.depth_curves[f"epoch {signals.epoch}"] = curve
        self._log_params(trainer, audit.metrics)
        log_epoch_metrics(trainer, metrics, epoch=signals.epoch)
        self._write_history(trainer)
        return True

    def _log_params(self, trainer: L.Trainer, nested: dict[str, dict[str, float]]) -> None:
        if self._params_logged or trainer.sanity_checking:
            return
        for logger in trainer.loggers:
            logger.log_hyperparams(mlflow_params(nested))
        self._params_logged = True

    def _write_history(self, trainer: L.Trainer) -> None:
        """Every attacked epoch's numbers as the run artifact ``mia/history.json``."""
        text = json.dumps({str(e): m for e, m in sorted(self.history.items())}, indent=1)
        path = find_recorder(trainer).artifact_dir(trainer) / "mia" / "history.json"
        atomic_write(path, lambda f: f.write(text.encode()))

    def state_dict(self) -> dict:
        """The attacked epochs' numbers: a resumed run keeps its whole history."""
        return {"history": {str(e): m for e, m in self.history.items()}}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = {int(e): m for e, m in state_dict.get("history", {}).items()}

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the last epoch, when a callback stopped training after the recorder had run
        recorder = find_recorder(trainer)
        recorder.record_final(trainer, pl_module)
        if recorder.latest is not None and recorder.latest.epoch != self.last_epoch:
            self._attack(trainer, recorder.latest)
        if not (self.plot and self.last_scores):
            return
        folder = recorder.artifact_dir(trainer)
        if self.depth_curves:
            plot_layer_depth(
                self.depth_curves,
                folder / "mia_depth.png",
                ylabel="membership AUC (nn_embedding)",
                title="membership leakage by layer depth",
            )
        path = folder / "roc" / f"epoch_{self.last_epoch:03d}.png"
        plot_roc(
            self.last_scores,
            trainer.datamodule.keep,
            path,
            title=f"membership attacks, epoch {self.last_epoch}",
        )
