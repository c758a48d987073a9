"""The audit's intervals and empirical privacy bound, per attack, on the first target.

For each attack: the TPR at the lowest audited FPR with its exact (Clopper-Pearson) 95%
interval and the upper bound of the FPR achieved there
(:func:`~mia_bench.intervals.tpr_at_fpr_interval`), and the epsilon its ROC certifies at
``delta`` (:func:`~mia_bench.empirical_privacy.epsilon_lower_bound`, whose docstring says
what one model's audit can and cannot certify). Written as ``bounds.md`` next to the audit
table and as ``bounds`` in ``audit.json``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from mia_bench.empirical_privacy import epsilon_lower_bound
from mia_bench.intervals import DEFAULT_CONFIDENCE, tpr_at_fpr_interval

DELTA = 1e-5


def bounds_rows(
    scores: Mapping[str, np.ndarray], keep: np.ndarray, fprs: Sequence[float], delta: float = DELTA
) -> list[dict[str, float | str]]:
    """One row per attack: TPR at ``min(fprs)`` with its interval, the achieved FPR's
    upper bound, and the certified epsilon at ``delta``."""
    fpr = min(fprs)
    rows = []
    for name, values in scores.items():
        rate = tpr_at_fpr_interval(values, keep, fpr)
        bound = epsilon_lower_bound(values, keep, delta)
        rows.append({
            "attack": name, "fpr": fpr, "tpr": rate.tpr, "tpr_low": rate.tpr_low,
            "tpr_high": rate.tpr_high, "fpr_achieved": rate.fpr, "fpr_high": rate.fpr_high,
            "epsilon_lower_bound": bound.epsilon, "delta": delta,
        })  # fmt: skip
    return rows


def bounds_markdown(rows: list[dict], target: int | None) -> str:
    """The rows as a Markdown table with a line on what they mean."""
    if not rows:
        return ""
    fpr = rows[0]["fpr"]
    level = f"{100 * DEFAULT_CONFIDENCE:g}%"
    lines = [
        f"Target run {target}: TPR at FPR <= {100 * fpr:g}% with its exact {level} interval "
        f"(Clopper-Pearson), and the epsilon the attack's ROC certifies at delta "
        f"{rows[0]['delta']:g} (a lower bound for the training algorithm).",
        "",
        f"| attack | TPR@{100 * fpr:g}% | {level} interval | achieved FPR (upper) | epsilon >= |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['attack']} | {100 * r['tpr']:.2f}% | {100 * r['tpr_low']:.2f}%-"
            f"{100 * r['tpr_high']:.2f}% | {100 * r['fpr_achieved']:.3f}% "
            f"({100 * r['fpr_high']:.3f}%) | {r['epsilon_lower_bound']:.3f} |"
        )
    return "\n".join(lines) + "\n"
