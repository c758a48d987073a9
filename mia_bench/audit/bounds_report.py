"""The audit's intervals and empirical privacy bound, per attack and target.

For each attack on each target: AUC with its bootstrap interval, the TPR at the lowest
audited FPR with its exact (Clopper-Pearson) 95% interval and the upper bound of the FPR
achieved there (:func:`~mia_bench.intervals.interval_metrics`), and the epsilon its ROC
certifies at delta 1e-5 (:func:`~mia_bench.empirical_privacy.epsilon_lower_bound`,
whose docstring says what one model's audit can and cannot certify), beside the
accountant's epsilon of a DP-SGD target. All are the audit engine's numbers; nothing
is recomputed here. Written as ``bounds.md`` and as ``bounds`` in ``audit.json``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from mia_bench.audit.engine import AuditResult
from mia_bench.empirical_privacy import DELTA
from mia_bench.intervals import DEFAULT_CONFIDENCE

NAN = float("nan")


def bounds_rows(
    result: AuditResult, fprs: Sequence[float], accountant: Mapping[int, float] | None = None
) -> list[dict[str, float | str | int]]:
    """One row per (target, attack), targets in run-index order."""
    fpr = f"{min(fprs):g}"
    tpr = f"tpr_at_fpr_{fpr}"
    rows = []
    for target, audit in sorted(result.per_target.items()):
        for name, m in audit.metrics.items():
            rows.append({
                "target": target, "attack": name, "fpr": min(fprs),
                "auc": m["auc"], "auc_low": m.get("auc_low", NAN),
                "auc_high": m.get("auc_high", NAN),
                "tpr": m[tpr], "tpr_low": m.get(f"{tpr}_low", NAN),
                "tpr_high": m.get(f"{tpr}_high", NAN),
                "fpr_achieved": m[f"fpr_at_fpr_{fpr}"],
                "fpr_high": m.get(f"fpr_at_fpr_{fpr}_high", NAN),
                "epsilon_lower_bound": m.get("epsilon_lower_bound", NAN), "delta": DELTA,
                "accountant_epsilon": (accountant or {}).get(target, NAN),
            })  # fmt: skip
    return rows


def bounds_markdown(rows: list[dict]) -> str:
    """The first target's rows as a Markdown table, then each attack's epsilon over all
    targets, with lines on what they mean."""
    if not rows:
        return ""
    first = rows[0]["target"]
    fpr, level = 100 * rows[0]["fpr"], f"{100 * DEFAULT_CONFIDENCE:g}%"
    accountant = [r["accountant_epsilon"] for r in rows if not np.isnan(r["accountant_epsilon"])]
    lines = [
        f"Target run {first}: AUC with its {level} bootstrap interval, TPR at FPR <= {fpr:g}% "
        f"with its exact {level} interval (Clopper-Pearson) and the achieved FPR with its "
        f"upper bound, and the epsilon the attack's ROC certifies at delta {DELTA:g} (a "
        "lower bound for the training algorithm, at 95% confidence over the thresholds "
        "tested).",
        "",
        f"| attack | AUC [{level}] | TPR@{fpr:g}% [{level}] | achieved FPR (upper) | epsilon >= |",
        "|---|---|---|---|---|",
    ]
    for r in (r for r in rows if r["target"] == first):
        lines.append(
            f"| {r['attack']} | {r['auc']:.3f} [{r['auc_low']:.3f}, {r['auc_high']:.3f}] | "
            f"{100 * r['tpr']:.2f}% [{100 * r['tpr_low']:.2f}, {100 * r['tpr_high']:.2f}] | "
            f"{100 * r['fpr_achieved']:.3f}% ({100 * r['fpr_high']:.3f}%) | "
            f"{r['epsilon_lower_bound']:.3f} |"
        )
    targets = sorted({r["target"] for r in rows})
    lines += [
        "",
        f"Epsilon certified over the {len(targets)} targets (each its own audit of one model):",
        "",
        "| attack | mean | min | max |",
        "|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["attack"] for r in rows):
        eps = np.array([r["epsilon_lower_bound"] for r in rows if r["attack"] == name])
        lines.append(f"| {name} | {eps.mean():.3f} | {eps.min():.3f} | {eps.max():.3f} |")
    if accountant:
        values = np.array(accountant)
        best = max(r["epsilon_lower_bound"] for r in rows)
        lines += [
            "",
            f"DP-SGD's accountant: epsilon {values.mean():.2f} (min {values.min():.2f}, max "
            f"{values.max():.2f}) at its delta; the attacks certify at most {best:.3f}. "
            "The guarantee holds for any attack; the gap is what these attacks do not reach.",
        ]
    return "\n".join(lines) + "\n"
