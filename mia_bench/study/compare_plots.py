"""The scatters of ``mia-bench compare``: attack success against the generalization gap.

One point per audited model, one colour and legend entry per recipe (audited group, and
its reference groups when they are not the group itself), as in Rahmani et al. 2026,
Figs. 5-7. Figures are built without ``pyplot``: nothing is opened on screen or kept in
pyplot's figure list, whatever the backend, so the same figure is saved by
``mia-bench compare`` and shown inline by a notebook (``display(fig)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from matplotlib.figure import Figure

from mia_bench.metrics import DEFAULT_FPRS

GAPS = {"gap_acc": "train - test accuracy", "gap_loss": "test - train loss"}


def tpr_key(attack: str, fpr: float) -> str:
    """The name of an attack's TPR at ``fpr`` in an audit's per-target metrics.

    >>> tpr_key("loss", 0.001)
    'loss/tpr_at_fpr_0.001'
    """
    return f"{attack}/tpr_at_fpr_{fpr:g}"


def recipe_label(group: str, references: str) -> str:
    """How a recipe is named in a legend: its group, and its references if others.

    >>> recipe_label("plain", "plain"), recipe_label("dropout", "plain")
    ('plain', 'dropout (references: plain)')
    """
    return group if references in ("", group) else f"{group} (references: {references})"


def scatter(pts: pd.DataFrame, attack: str, x: str, fpr: float = DEFAULT_FPRS[0]) -> Figure:
    """TPR at ``fpr`` of ``attack`` against ``x``, one colour per recipe.

    Args:
        pts: one row per audited model (:func:`mia_bench.study.compare.points`).
        attack: an attack the audits reported.
        x: ``gap_acc`` or ``gap_loss``.
        fpr: the FPR whose TPR is plotted.

    Returns:
        The figure; its legend has one entry per recipe.
    """
    fig = Figure(figsize=(6, 4.5), layout="tight")
    ax = fig.subplots()
    for (group, refs), rows in pts.groupby(["group", "references"], sort=True):
        ax.scatter(rows[x], 100 * rows[tpr_key(attack, fpr)], s=18, label=recipe_label(group, refs))
    ylabel = f"{attack} TPR at {100 * fpr:g}% FPR (%)"
    ax.set(xlabel=GAPS[x], ylabel=ylabel, title=f"{len(pts)} audited models")
    ax.legend(title="recipe", fontsize=8)
    return fig


def scatters(
    pts: pd.DataFrame, attacks: Sequence[str], fpr: float = DEFAULT_FPRS[0]
) -> dict[str, Figure]:
    """Every attack's scatters against both gaps, by file name (``tpr_vs_gap_acc_loss.png``).

    Attacks the audits did not report at ``fpr`` are left out; no points, no figures.
    """
    return {
        f"tpr_vs_{x}_{a}.png": scatter(pts, a, x, fpr)
        for a in attacks
        if tpr_key(a, fpr) in pts and len(pts)
        for x in GAPS
    }
