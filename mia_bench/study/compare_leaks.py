"""``compare``'s answers to "is the difference real?" and "which records stay exposed?".

* :func:`difference_table`: per recipe and attack, the TPR at the compared FPR with the
  95% interval of its mean over the targets (Student's t), and the p-value of the
  difference from the baseline recipe (Welch's t-test over the targets), so that
  "0.14% vs 0.23%" comes with whether it is more than the training's randomness.
* :func:`exposure_table`: how many of the baseline recipe's most vulnerable records
  (:func:`mia_bench.audit.leaks.vulnerable`, from its audit's ``leaks.csv``) each other
  recipe's strongest attack still flags in at least half their member targets.

The baseline is the recipe named by ``--baseline``, else the audit with the most
vulnerable records (the recipe without defense, in a defense study).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from mia_bench.audit.leaks import exposed
from mia_bench.errors import UserError
from mia_bench.study.compare_plots import tpr_key


def baseline_of(audits: Sequence[dict], baseline: str | None) -> dict | None:
    """The baseline audit: ``baseline``'s (with its own recipe's references when it was
    also audited with others'; an error naming the audited groups when it has none),
    else the one with the most vulnerable records; None without leaks."""
    if baseline is not None:  # its audit against its own references first
        found = sorted(
            (d for d in audits if d["group"] == baseline), key=lambda d: d["references"] != baseline
        )
        if not found:
            have = ", ".join(sorted({d["group"] for d in audits}))
            raise UserError(f"--baseline {baseline!r} has no audit here; audited: {have}")
        return found[0]
    with_leaks = [d for d in audits if d.get("leaks")]
    if not with_leaks:
        return None
    return max(with_leaks, key=lambda d: len(d["leaks"]["vulnerable"]))


def _t_interval(values: np.ndarray) -> tuple[float, float]:
    from scipy.stats import t

    if len(values) < 2:
        return float("nan"), float("nan")
    half = t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def difference_table(
    pts: pd.DataFrame, attacks: Sequence[str], fpr: float, baseline: tuple[str, str]
) -> pd.DataFrame:
    """One row per (recipe, attack): TPR mean, its 95% interval over the targets, and
    Welch's p-value against ``baseline`` (``(group, references)``)."""
    from scipy.stats import ttest_ind

    if "epoch" in pts:  # each target's last audited epoch, as the recipe table
        last = pts.groupby(["group", "references", "run_index"])["epoch"].transform("max")
        pts = pts[pts["epoch"] == last]
    groups = dict(list(pts.groupby(["group", "references"], sort=False)))
    rows = []
    for (group, refs), rows_of in groups.items():
        for attack in attacks:
            key = tpr_key(attack, fpr)
            if key not in rows_of:
                continue
            values = rows_of[key].dropna().to_numpy()
            low, high = _t_interval(values)
            p = float("nan")
            base = groups.get(baseline)
            if base is not None and (group, refs) != baseline and key in base:
                other = base[key].dropna().to_numpy()
                if len(values) > 1 and len(other) > 1:
                    p = float(ttest_ind(values, other, equal_var=False).pvalue)
            rows.append({"group": group, "references": refs, "attack": attack,
                         "tpr": values.mean(), "tpr_low": low, "tpr_high": high,
                         "targets": len(values), "p_vs_baseline": p})  # fmt: skip
    return pd.DataFrame(rows)


def difference_markdown(table: pd.DataFrame, fpr: float, baseline: tuple[str, str]) -> str:
    """The difference table as Markdown, with a line on how to read it."""
    if table.empty:
        return ""
    lines = [
        f"Is the difference real? TPR at {100 * fpr:g}% FPR: mean over targets with the 95% "
        f"interval of the mean (Student's t), and the p-value of the difference from "
        f"`{baseline[0]}` (Welch's t-test over the targets; below 0.05: more than the "
        "training's randomness).",
        "",
        "| recipe | references | attack | TPR | 95% interval | targets | p vs baseline |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        p = "baseline" if (r.group, r.references) == baseline else _p(r.p_vs_baseline)
        lines.append(
            f"| {r.group} | {r.references} | {r.attack} | {100 * r.tpr:.2f}% | "
            f"{100 * r.tpr_low:.2f}-{100 * r.tpr_high:.2f}% | {r.targets} | {p} |"
        )
    return "\n".join(lines) + "\n"


def _p(value: float) -> str:
    return "-" if np.isnan(value) else f"{value:.3g}"


def _ranking(client: MlflowClient, audit_run: str) -> pd.DataFrame | None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(audit_run, "leaks.csv", tmp)
        except Exception:  # noqa: BLE001 - an audit from before leaks were ranked
            return None
        return pd.read_csv(path)


def exposure_table(client: MlflowClient, audits: Sequence[dict], base: dict) -> pd.DataFrame:
    """Per audit: how many of ``base``'s vulnerable records its strongest attack still
    flags (``exposed``), of how many its targets trained on (``compared``); NaN when the
    audit's pool is not the baseline's (a different size or labels)."""
    reference = _ranking(client, base["audit_run"])
    if reference is None:
        return pd.DataFrame()
    records = np.asarray(base["leaks"]["vulnerable"], dtype=int)
    labels = reference.set_index("index")["label"]
    rows = []
    for doc in audits:
        ranking = _ranking(client, doc["audit_run"]) if doc.get("leaks") else None
        row = {"group": doc["group"], "references": doc["references"],
               "attack": (doc.get("leaks") or {}).get("attack", ""),
               "exposed": float("nan"), "compared": float("nan")}  # fmt: skip
        same_pool = ranking is not None and len(ranking) == len(reference)
        if same_pool and ranking.set_index("index")["label"].reindex(labels.index).equals(labels):
            row["exposed"], row["compared"] = exposed(records, ranking)
        rows.append(row)
    return pd.DataFrame(rows)


def exposure_markdown(table: pd.DataFrame, base: dict) -> str:
    """The exposure table as Markdown."""
    if table.empty:
        return ""
    count = len(base["leaks"]["vulnerable"])
    lines = [
        f"Vulnerable records still exposed: of the {count} records `{base['group']}`'s "
        f"strongest attack flags in at least half their member targets, how many each "
        "recipe's strongest attack still flags that often (same pool only).",
        "",
        "| recipe | references | its strongest attack | still exposed |",
        "|---|---|---|---|",
    ]
    for r in table.itertuples():
        cell = "- (another pool)" if np.isnan(r.exposed) else f"{r.exposed:.0f} / {r.compared:.0f}"
        lines.append(f"| {r.group} | {r.references} | {r.attack} | {cell} |")
    return "\n".join(lines) + "\n"


def write_comparisons(
    client: MlflowClient,
    audits: Sequence[dict],
    pts: pd.DataFrame,
    attacks: Sequence[str],
    fpr: float,
    folder: Path,
    baseline: str | None = None,
) -> str:
    """Write ``differences.csv`` and ``exposure.csv``; returns their Markdown (empty
    without a baseline)."""
    base = baseline_of(audits, baseline)
    if base is None:
        return ""
    key = (base["group"], base["references"])
    differences = difference_table(pts, attacks, fpr, key)
    differences.to_csv(folder / "differences.csv", index=False)
    parts = [difference_markdown(differences, fpr, key)]
    if base.get("leaks"):
        exposure = exposure_table(client, audits, base)
        exposure.to_csv(folder / "exposure.csv", index=False)
        parts.append(exposure_markdown(exposure, base))
    return "\n".join(p for p in parts if p)
