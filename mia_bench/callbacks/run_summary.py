"""What a run shows as it goes: a line per epoch, the attack-vs-epoch figure, the result."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, RichProgressBar
from lightning.pytorch.loggers import MLFlowLogger

from mia_bench.callbacks.attack_monitor import AttackMonitor, find_recorder
from mia_bench.console import mlflow_hint, result_table

FIGURE = "mia_vs_epoch.png"
_SHOWN = ("train/acc", "test/acc", "gap/acc")


def _monitor(trainer: Any) -> AttackMonitor | None:
    return next((c for c in trainer.callbacks if isinstance(c, AttackMonitor)), None)


class RunSummary(Callback):
    """A line per epoch (without a progress bar), the figure, and the result at the end.

    After each epoch (once the LightningModule has logged it) the run's numbers are
    kept; without a progress bar (a fleet's run log, output to a file) one line per
    epoch is printed. The run artifact ``mia_vs_epoch.png`` plots every attack's AUC and
    TPR at the lowest FPR against epoch, beside train and test accuracy; it is redrawn
    at most every ``figure_every_s`` seconds (a draw takes about 0.6 s on one CPU
    thread), and at the end of fit. At the end of fit
    the result table (each attack's AUC and TPRs at the last attacked epoch), the run id
    and how to open the run in the MLflow UI are printed. Place it after the
    :class:`~mia_bench.callbacks.AttackMonitor` (``mia-bench fit`` does).

    Args:
        figure: draw ``mia_vs_epoch.png``.
        figure_every_s: least seconds between two redraws while training.
        lines: print a line per epoch: True, False, or None (only without a progress bar).
    """

    def __init__(
        self, figure: bool = True, figure_every_s: float = 30.0, lines: bool | None = None
    ) -> None:
        self.figure = figure
        self.figure_every_s = figure_every_s
        self.lines = lines
        self.epochs: dict[int, dict[str, float]] = {}  # epoch -> train/test numbers
        self._current: int | None = None
        self._drawn_at = time.monotonic()  # the first draw comes figure_every_s in
        self._label: str | None = None

    def label(self, trainer: Any) -> str:
        """``run 3 of group 'g'`` from the run's MLflow tags (or its data module), or ``""``."""
        if self._label is None:
            tags = {}
            logger = _mlflow_logger(trainer)
            if logger is not None and logger.run_id:
                tags = logger.experiment.get_run(logger.run_id).data.tags
            dm = getattr(trainer, "datamodule", None)
            index = tags.get("mia.run_index", getattr(dm, "run_index", None))
            group = tags.get("mia.group")
            self._label = "" if index is None else f"run {index}"
            if group:
                self._label += f" of group {group!r}"
        return self._label

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._current is not None:
            self._epoch_done(trainer, self._current)
        self._current = trainer.current_epoch

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._current is not None:
            self._epoch_done(trainer, self._current, final=True)
        table = self.result(trainer)
        if table:
            print(table, flush=True)

    def _epoch_done(self, trainer: Any, epoch: int, final: bool = False) -> None:
        metrics = trainer.callback_metrics
        row = {k: float(metrics[k]) for k in (*_SHOWN, "train/loss", "test/loss") if k in metrics}
        if not row:  # the epoch was not trained here (a resumed run's first hook)
            return
        self.epochs[epoch] = row
        if self.lines or (self.lines is None and not _has_progress_bar(trainer)):
            print(self.epoch_line(trainer, epoch), flush=True)
        if self.figure and (final or time.monotonic() - self._drawn_at >= self.figure_every_s):
            self.draw(trainer)

    def epoch_line(self, trainer: Any, epoch: int) -> str:
        """``run 0 of group 'g', epoch 4/19: train/acc 0.994, ...; loss: AUC 0.612, ...``
        (epochs counted from 0, as Lightning's progress bar and MLflow's steps count them)."""
        row = self.epochs[epoch]
        parts = [f"{k} {row[k]:.3f}" for k in _SHOWN if k in row]
        prefix = f"{self.label(trainer)}, " if self.label(trainer) else ""
        last = getattr(trainer, "max_epochs", None)
        of = f"/{last - 1}" if last and last > 0 else ""  # no limit (-1): no last epoch
        line = f"{prefix}epoch {epoch}{of}: " + ", ".join(parts)
        monitor = _monitor(trainer)
        if monitor is not None and epoch in monitor.history:
            m = monitor.history[epoch].get(monitor.headline, {})
            fpr = min(monitor.fprs)
            tpr = m.get(f"tpr_at_fpr_{fpr:g}")
            if "auc" in m:
                line += f"; {monitor.headline}: AUC {m['auc']:.3f}"
            if tpr is not None:
                line += f", TPR@{100 * fpr:g}% {100 * tpr:.2f}%"
        return line

    def draw(self, trainer: Any) -> None:
        """(Re)draw the run artifact ``mia_vs_epoch.png``."""
        from mia_bench.plots import plot_attack_vs_epoch

        monitor = _monitor(trainer)
        if monitor is None or not monitor.history:
            return
        path = find_recorder(trainer).artifact_dir(trainer) / FIGURE
        title = f"{self.label(trainer)}: membership leakage by epoch".lstrip(": ")
        plot_attack_vs_epoch(monitor.history, self.epochs, min(monitor.fprs), path, title)
        self._drawn_at = time.monotonic()

    def result(self, trainer: Any) -> str:
        """The result table of the last attacked epoch, the run and where to see it."""
        monitor = _monitor(trainer)
        if monitor is None or not monitor.history:
            return ""
        epoch = max(monitor.history)
        attacks = {a: m for a, m in monitor.history[epoch].items() if "auc" in m}
        if monitor.headline in attacks:  # first
            attacks = {monitor.headline: attacks.pop(monitor.headline)} | attacks
        members = next(iter(attacks.values()), {})
        counts = ""
        if "num_members" in members:
            counts = (
                f" ({int(members['num_members']):,} members, "
                f"{int(members['num_nonmembers']):,} non-members)"
            )
        where = f"{self.label(trainer)}, " if self.label(trainer) else ""
        title = f"membership inference, {where}epoch {epoch}{counts}"
        lines = [result_table(attacks, monitor.fprs, title)]
        logger = _mlflow_logger(trainer)
        if logger is not None and logger.run_id:
            uri = getattr(logger, "_tracking_uri", None) or logger.experiment.tracking_uri
            lines.append(f"run {logger.run_id} in experiment {logger.experiment_id}")
            lines.append(mlflow_hint(str(uri), logger.experiment_id, logger.run_id))
        return "\n".join(lines)

    def state_dict(self) -> dict[str, Any]:
        """The epochs' train/test numbers: a resumed run's figure keeps its first epochs."""
        return {"epochs": {str(e): row for e, row in self.epochs.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs = {int(e): row for e, row in state_dict.get("epochs", {}).items()}


def _has_progress_bar(trainer: Any) -> bool:
    return getattr(trainer, "progress_bar_callback", None) is not None


def _mlflow_logger(trainer: Any) -> MLFlowLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)), None)


class ProgressBar(RichProgressBar):
    """Lightning's rich progress bar without its ``v_num`` (an MLflow run has an id),
    gone before the end-of-fit hooks print (Lightning's stays up until teardown)."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop_progress()

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics
