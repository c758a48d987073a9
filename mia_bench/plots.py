"""Log-log ROC curves of membership attacks (LiRA's way of showing low-FPR power)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mia_bench.metrics import auc, roc_curve  # noqa: E402


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Lay out, write ``fig`` to ``path`` as a PNG (creating its folder), close it."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_roc(
    scores: Mapping[str, np.ndarray], membership: np.ndarray, path: Path, title: str = ""
) -> Path:
    """Plot every attack's ROC curve on log-log axes and save a PNG.

    Args:
        scores: attack name -> ``float64[N]`` scores (higher = member).
        membership: ``bool[N]`` truth (True = member).
        path: where to write the PNG.
        title: figure title.

    Returns:
        ``path``.
    """
    fig, ax = plt.subplots(figsize=(5, 5))
    floor = 1.0 / max(int((~membership).sum()), 1)
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(s, membership)
        ax.plot(
            np.maximum(fpr, floor),
            np.maximum(tpr, floor),
            label=f"{name} (AUC {auc(s, membership):.3f})",
        )
    ax.plot([floor, 1], [floor, 1], "k--", lw=0.8, label="chance")
    ax.set(
        xscale="log",
        yscale="log",
        xlim=(floor, 1),
        ylim=(floor, 1),
        xlabel="false positive rate",
        ylabel="true positive rate",
        title=title,
    )
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


def plot_layer_depth(
    curves: Mapping[str, Mapping[str, float]], path: Path, ylabel: str = "AUC", title: str = ""
) -> Path:
    """Plot a metric against layer depth, one line per curve, and save a PNG.

    Args:
        curves: curve label (an epoch, a property) -> ``{layer: value}`` with the layers
            in depth order, shallow first; every curve over the same layers.
        path: where to write the PNG.
        ylabel: the metric's name.
        title: figure title.

    Returns:
        ``path``.
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    layers: list[str] = []
    for label, values in curves.items():
        layers = list(values)
        ax.plot(range(len(layers)), list(values.values()), marker="o", label=label)
    ax.set_xticks(range(len(layers)), layers, rotation=30, ha="right", fontsize=8)
    ax.set(xlabel="layer (shallow to deep)", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)
