"""Tables of a group's property inference: one row per layer, one column per epoch.

The numbers are those the ``PropertyMonitor`` logged during each run's fit
(``property/<name>/<layer>/<metric>``), averaged over the group's runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mia_bench.audit.report import layer_epoch_markdown
from mia_bench.store.groups import GroupRun
from mia_bench.store.runs import MetricHistory


def property_table(
    history: MetricHistory,
    runs: Sequence[GroupRun],
    name: str,
    layers: Sequence[str],
    epochs: Sequence[int],
    metric: str = "auc",
) -> pd.DataFrame:
    """Mean and std over runs of ``property/<name>/<layer>/<metric>`` per layer and epoch.

    Args:
        history: MLflow metric access.
        runs: the group's runs.
        name: the property.
        layers: layers, shallow to deep.
        epochs: the recorded epochs to tabulate.
        metric: ``auc``, ``acc`` or ``balanced_acc``.

    Returns:
        Rows ``(depth, layer, epoch, mean, std, num_runs)``; runs lacking a value are
        left out of that cell.
    """
    rows = []
    for depth, layer in enumerate(layers):
        for epoch in epochs:
            key = f"property/{name}/{layer}/{metric}"
            values = np.array([history.at(r.run_id, key, epoch) for r in runs])
            values = values[np.isfinite(values)]
            mean = float(values.mean()) if len(values) else float("nan")
            std = float(values.std()) if len(values) else float("nan")
            rows.append((depth, layer, epoch, mean, std, len(values)))
    return pd.DataFrame(rows, columns=["depth", "layer", "epoch", "mean", "std", "num_runs"])


def property_markdown(table: pd.DataFrame, title: str = "AUC") -> str:
    """``property_table`` as markdown: a row per layer, ``mean ± std`` per epoch."""
    return layer_epoch_markdown(table, mean="mean", std="std", title=title)
