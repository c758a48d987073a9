"""What a run prints: its result table, where to see it in MLflow, and nothing else.

:func:`quiet_libraries` drops the libraries' tips and deprecation notices (Lightning's
LitLogger tip, its ``LeafSpec`` deprecation, MLflow's schema messages) and prints
mia-bench's own warnings as one line. :func:`result_table` and :func:`mlflow_hint`
are what the end of every ``fit`` and ``audit`` shows.
"""

from __future__ import annotations

import logging
import shutil
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlparse

_PACKAGE = str(Path(__file__).parent)
# logger -> the starts of its INFO messages that tell a user nothing about the run
_CHATTER = {
    "lightning.fabric.utilities.rank_zero": ("💡 Tip",),  # Lightning's advertisements
    "lightning.pytorch.utilities.rank_zero": ("💡 Tip",),
    "lightning.pytorch.trainer.connectors.checkpoint_connector": ("`weights_only` was not set",),
}
_NOISY_LOGGERS = ("mlflow.store.db.utils", "alembic.runtime.migration")


class _DropChatter(logging.Filter):
    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """mia-bench's warnings as ``mia-bench: warning: ...``; others as Python shows them.

    Only the format changes: whoever records warnings (``pytest.warns``,
    ``warnings.catch_warnings``) still gets them.
    """
    if not str(filename).startswith(_PACKAGE):
        return _python_format_warning(message, category, filename, lineno, line)
    return f"mia-bench: warning: {message}\n"


_python_format_warning = warnings.formatwarning


def quiet_libraries() -> None:
    """Drop third-party tips and deprecation notices; mia-bench's warnings on one line.

    Called by the ``mia-bench`` command and by fleet workers (it changes process-wide
    logging and warning settings, so the library itself does not call it on import).
    """
    for name, starts in _CHATTER.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropChatter) for f in logger.filters):
            logger.addFilter(_DropChatter(starts))
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")
    warnings.formatwarning = _format_warning


def on_terminal(stream=None) -> bool:
    """Whether ``stream`` (default stdout) is a terminal: progress bars only there."""
    stream = sys.stdout if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


def tqdm_disable(progress: bool | None) -> bool | None:
    """tqdm's ``disable`` for a ``progress`` setting: None leaves it to tqdm, which
    shows a bar only on a terminal.

    >>> tqdm_disable(True), tqdm_disable(False), tqdm_disable(None)
    (False, True, None)
    """
    return None if progress is None else not progress


def result_table(
    metrics: Mapping[str, Mapping[str, float]], fprs: Sequence[float], title: str = ""
) -> str:
    """Each attack's AUC and TPR at the FPRs, one row per attack, as aligned text.

    With intervals among the measures (:func:`mia_bench.intervals.interval_metrics`) each
    number is followed by its 95% interval: the bootstrap's for AUC, the exact
    (Clopper-Pearson) one for TPR; with ``epsilon_lower_bound`` an ``eps >=`` column ends
    the row.

    Args:
        metrics: attack -> measure -> value (``auc``, ``tpr_at_fpr_<x>``), as the audit
            engine returns them.
        fprs: the FPRs whose TPR is shown.
        title: a first line.

    >>> print(result_table({"loss": {"auc": 0.61234, "tpr_at_fpr_0.001": 0.004}}, [0.001]))
    attack  AUC    TPR@0.1%
    loss    0.612  0.40%
    >>> m = {"auc": 0.61, "auc_low": 0.6, "auc_high": 0.62, "tpr_at_fpr_0.001": 0.004,
    ...      "tpr_at_fpr_0.001_low": 0.001, "tpr_at_fpr_0.001_high": 0.0102,
    ...      "epsilon_lower_bound": 0.25}
    >>> print(result_table({"loss": m}, [0.001]))
    attack  AUC [95% CI]          TPR@0.1% [95% CI]   eps >=
    loss    0.610 [0.600, 0.620]  0.40% [0.10, 1.02]  0.25
    """
    every = list(metrics.values())
    with_ci = any("auc_low" in m or any(f"tpr_at_fpr_{x:g}_low" in m for x in fprs) for m in every)
    ci = " [95% CI]" if with_ci else ""
    header = ["attack", f"AUC{ci}", *(f"TPR@{100 * x:g}%{ci}" for x in fprs)]
    epsilon = any("epsilon_lower_bound" in m for m in every)
    if epsilon:
        header.append("eps >=")
    rows = [header]
    for name, m in metrics.items():
        row = [name, _with_interval(m, "auc", "{:.3f}", 1.0)]
        for x in fprs:
            key = f"tpr_at_fpr_{x:g}"
            row.append("-" if key not in m else _with_interval(m, key, "{:.2f}", 100.0, "%"))
        if epsilon:
            row.append(f"{m['epsilon_lower_bound']:.2f}" if "epsilon_lower_bound" in m else "-")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join([title, *lines] if title else lines)


def _with_interval(m: Mapping[str, float], key: str, fmt: str, scale: float, unit: str = "") -> str:
    """``0.40%`` or, with ``<key>_low`` and ``_high`` known, ``0.40% [0.10, 1.02]``."""
    text = fmt.format(scale * m[key]) + unit
    if f"{key}_low" in m and f"{key}_high" in m:
        low, high = (fmt.format(scale * m[f"{key}_{end}"]) for end in ("low", "high"))
        text += f" [{low}, {high}]"
    return text


def _mlflow_command() -> str:
    """``mlflow``, or the path of the one beside this Python when it is not on PATH."""
    beside = Path(sys.executable).parent / "mlflow"
    on_path = shutil.which("mlflow")
    if not beside.exists() or (on_path and Path(on_path).resolve() == beside.resolve()):
        return "mlflow"
    try:
        return str(beside.relative_to(Path.cwd()))
    except ValueError:
        return str(beside)


def run_url(base: str, experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI address of an experiment's training runs, or of one run.

    ``workflowType=machine_learning`` opens the UI's "Model training" side (MLflow 3
    starts on its GenAI side).

    >>> run_url("http://127.0.0.1:5000", "1", "abc")
    'http://127.0.0.1:5000/#/experiments/1/runs/abc?workflowType=machine_learning'
    >>> run_url("http://127.0.0.1:5000/", "1")
    'http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning'
    """
    page = f"runs/{run_id}" if run_id else "runs"
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/{page}?workflowType=machine_learning"


def mlflow_hint(tracking_uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """How to see a run in the MLflow UI: the command to start it and the run's address.

    >>> print(mlflow_hint("http://10.0.0.2:5000", "3", "abc"))
    see it in MLflow: http://10.0.0.2:5000/#/experiments/3/runs/abc?workflowType=machine_learning
    """
    if urlparse(tracking_uri).scheme in ("http", "https"):
        return f"see it in MLflow: {run_url(tracking_uri, experiment_id, run_id)}"
    uri = tracking_uri.split("?")[0]  # without the connection options mia-bench adds
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{Path(uri[len('sqlite:///') :]).resolve()}"
    return (
        f"see it in MLflow: {_mlflow_command()} ui --backend-store-uri {uri}\n"
        f"  then open {run_url('http://127.0.0.1:5000', experiment_id, run_id)}"
    )
