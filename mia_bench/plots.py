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
    """Lay out, write ``fig`` to ``path`` as a PNG (creating its folder, atomically: a
    reader never sees half a figure), close it."""
    from mia_bench.store.artifacts import atomic_write

    fig.tight_layout()
    try:
        atomic_write(Path(path), lambda f: fig.savefig(f, dpi=120, format="png"))
    finally:
        plt.close(fig)
    return path


def plot_roc(
    scores: Mapping[str, np.ndarray],
    membership: np.ndarray,
    path: Path,
    title: str = "",
    intervals: bool = False,
) -> Path:
    """Plot every attack's ROC curve on log-log axes and save a PNG.

    Args:
        scores: attack name -> ``float64[N]`` scores (higher = member).
        membership: ``bool[N]`` truth (True = member).
        path: where to write the PNG.
        title: figure title.
        intervals: shade each curve's exact 95% interval of the TPR (Clopper-Pearson,
            pointwise, at 200 FPRs spaced evenly on the log axis).

    Returns:
        ``path``.
    """
    fig, ax = plt.subplots(figsize=(5.5 if intervals else 5, 5))
    membership = np.asarray(membership, dtype=bool)
    floor = 1.0 / max(int((~membership).sum()), 1)
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(s, membership)
        (line,) = ax.plot(
            np.maximum(fpr, floor),
            np.maximum(tpr, floor),
            label=f"{name} (AUC {auc(s, membership):.3f})",
        )
        if intervals:
            _shade_tpr_interval(ax, fpr, tpr, int(membership.sum()), floor, line.get_color())
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


def _shade_tpr_interval(ax, fpr, tpr, positives: int, floor: float, color) -> None:
    from mia_bench.intervals import clopper_pearson

    grid = np.geomspace(floor, 1.0, 200)
    at = np.searchsorted(fpr, grid, side="right") - 1  # the best TPR at FPR <= grid
    low, high = clopper_pearson(np.rint(tpr[at] * positives), positives)
    ax.fill_between(grid, np.maximum(low, floor), np.maximum(high, floor), color=color,
                    alpha=0.15, linewidth=0)  # fmt: skip


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


def plot_attack_vs_epoch(
    history: Mapping[int, Mapping[str, Mapping[str, float]]],
    accuracy: Mapping[int, Mapping[str, float]],
    fpr: float,
    path: Path,
    title: str = "",
) -> Path:
    """Attack AUC and TPR at ``fpr`` against epoch, beside train and test accuracy.

    Args:
        history: epoch -> attack -> measure (``auc``, ``tpr_at_fpr_<fpr>``), as
            ``AttackMonitor.history``; entries without an ``auc`` (reports) are skipped.
        accuracy: epoch -> ``{"train/acc": v, "test/acc": v}``.
        fpr: the FPR of the TPR panel.
        path: where to write the PNG.
        title: figure title.

    Returns:
        ``path``.
    """
    fig, (acc_ax, auc_ax, tpr_ax) = plt.subplots(1, 3, figsize=(13, 3.8))
    for key in ("train/acc", "test/acc"):
        points = [(e, row[key]) for e, row in sorted(accuracy.items()) if key in row]
        if points:
            acc_ax.plot(*zip(*points, strict=True), marker=".", label=key)
    epochs = sorted(history)
    attacks = [a for a, m in history[epochs[-1]].items() if "auc" in m] if epochs else []
    tpr = f"tpr_at_fpr_{fpr:g}"
    for attack in attacks:
        seen = [e for e in epochs if attack in history[e]]
        auc_ax.plot(seen, [history[e][attack]["auc"] for e in seen], marker=".", label=attack)
        values = [100 * history[e][attack].get(tpr, np.nan) for e in seen]
        tpr_ax.plot(seen, values, marker=".", label=attack)
    auc_ax.axhline(0.5, color="k", ls="--", lw=0.8)
    tpr_ax.axhline(100 * fpr, color="k", ls="--", lw=0.8, label="chance")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="train and test accuracy")
    auc_ax.set(xlabel="epoch", ylabel="AUC", title="membership attack AUC")
    tpr_ax.set(xlabel="epoch", ylabel="TPR (%)", title=f"TPR at {100 * fpr:g}% FPR")
    for ax in (acc_ax, auc_ax, tpr_ax):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
