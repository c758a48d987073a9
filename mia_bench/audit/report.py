"""What an audit writes: a table (CSV, markdown), a JSON summary, a ROC plot, an MLflow run."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from mia_bench.audit.bounds_report import bounds_markdown, bounds_rows
from mia_bench.audit.engine import AuditResult, layer_attack_name
from mia_bench.audit.leaks import (
    TOP,
    gmia_relation,
    leak_ranking,
    leaks_markdown,
    strongest_attack,
    vulnerable,
)
from mia_bench.metric_names import audit_metric_name, is_per_epoch
from mia_bench.metrics import DEFAULT_FPRS
from mia_bench.plots import plot_layer_depth, plot_roc
from mia_bench.store.runs import MetricHistory


def attack_names(result: AuditResult) -> list[str]:
    """Attacks present in the result, in the order they were run."""
    names: list[str] = []
    for target in result.per_target.values():
        names += [name for name in target.metrics if name not in names]  # not GMIA's reports
    return names


def summary(result: AuditResult, fprs: Sequence[float]) -> dict[str, Any]:
    """Per attack: auc, tpr_at_fpr (with achieved FPR), balanced_acc, num_targets."""
    agg = result.aggregate()

    def stat(name: str, key: str) -> dict[str, float]:
        entry = agg[f"{name}/{key}"]
        return {"mean": entry["mean"], "std": entry["std"]}

    out = {}
    for name in attack_names(result):
        out[name] = {
            "auc": stat(name, "auc"),
            "tpr_at_fpr": {
                f"{x:g}": {
                    **stat(name, f"tpr_at_fpr_{x:g}"),
                    "achieved_fpr_mean": stat(name, f"fpr_at_fpr_{x:g}")["mean"],
                }
                for x in fprs
            },
            "balanced_acc": stat(name, "balanced_acc"),
            "num_targets": agg[f"{name}/auc"]["num_targets"],
        }
        if f"{name}/epsilon_lower_bound" in agg:
            out[name]["epsilon_lower_bound"] = stat(name, "epsilon_lower_bound")
    return out


def table(result: AuditResult, fprs: Sequence[float]) -> pd.DataFrame:
    """One row per attack: AUC and TPR at each FPR, as mean ± std over targets."""
    rows = []
    for name, s in summary(result, fprs).items():
        row = {"attack": name, "auc": s["auc"]["mean"], "auc_std": s["auc"]["std"]}
        for x, t in s["tpr_at_fpr"].items():
            row[f"tpr@{x}"] = t["mean"]
            row[f"tpr@{x}_std"] = t["std"]
        row["balanced_acc"] = s["balanced_acc"]["mean"]
        if "epsilon_lower_bound" in s:
            row["epsilon_lower_bound"] = s["epsilon_lower_bound"]["mean"]
        row["num_targets"] = s["num_targets"]
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame, fprs: Sequence[float]) -> str:
    """The table as markdown, ``mean ± std``, TPR in percent, and the mean epsilon the
    attack certifies (``eps >=``, at delta 1e-5; per target in ``bounds.md``)."""
    epsilon = "epsilon_lower_bound" in df
    head = ["attack", "AUC", *[f"TPR@{x:g} FPR" for x in fprs], "bal. acc"]
    head += ["eps >=", "targets"] if epsilon else ["targets"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in df.iterrows():
        cells = [r["attack"], f"{r['auc']:.3f} ± {r['auc_std']:.3f}"]
        cells += [f"{100 * r[f'tpr@{x:g}']:.2f}% ± {100 * r[f'tpr@{x:g}_std']:.2f}" for x in fprs]
        cells += [f"{r['balanced_acc']:.3f}"]
        cells += [f"{r['epsilon_lower_bound']:.2f}"] if epsilon else []
        cells += [str(int(r["num_targets"]))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(
    result: AuditResult,
    fprs: Sequence[float],
    folder: Path,
    title: str,
    accountant: Mapping[int, float] | None = None,
) -> dict:
    """Write ``audit.csv``, ``audit.md``, ``audit.json``, ``roc.png``, ``bounds.md``
    and the records that leak (``leaks.csv``, ``leaks.md``) into ``folder``.

    ``accountant``: target -> DP-SGD's ``privacy/epsilon`` at the audited epoch, shown
    beside the empirical epsilon.
    """
    folder.mkdir(parents=True, exist_ok=True)
    df = table(result, fprs)
    df.to_csv(folder / "audit.csv", index=False)
    (folder / "audit.md").write_text(markdown(df, fprs))
    if result.scores and result.keep is not None:
        plot_roc(result.scores, result.keep, folder / "roc.png", title=title, intervals=True)
    bounds = bounds_rows(result, fprs, accountant)
    doc = {
        "epoch": result.epoch,
        "targets": sorted(result.per_target),
        "fprs": list(fprs),
        "num_references": result.num_references(),
        "attacks": summary(result, fprs),
        "target_runs": result.run_ids,
        "target_epochs": result.target_epochs,
        "per_target": result.flat(),
        "used": result.used(),
    }
    if bounds:
        (folder / "bounds.md").write_text(bounds_markdown(bounds))
        doc["bounds"] = bounds
        doc["bounds_markdown"] = (folder / "bounds.md").read_text()
    leaks = write_leaks(result, fprs, folder)
    if leaks:
        doc["leaks"] = leaks
    gmia = gmia_markdown(result)
    if gmia:
        (folder / "gmia.md").write_text(gmia)
        doc["gmia_markdown"] = gmia
    (folder / "audit.json").write_text(json.dumps(doc, indent=2))
    return doc


def write_leaks(result: AuditResult, fprs: Sequence[float], folder: Path) -> dict | None:
    """The records that leak (:mod:`mia_bench.audit.leaks`) under the strongest attack at
    the lowest FPR: ``leaks.csv`` (every pool record) and ``leaks.md``; returns what the
    audit document keeps (None without targets' keep rows)."""
    fpr = min(fprs)
    attack = strongest_attack(result.aggregate(), fpr)
    if attack is None or not result.keeps:
        return None
    scores = {i: t.scores[attack] for i, t in result.per_target.items() if attack in t.scores}
    keeps = {i: result.keeps[i] for i in scores}
    ranking = leak_ranking(scores, keeps, fpr, result.labels)
    ranking.to_csv(folder / "leaks.csv", index=False)
    selected = {i: t.vulnerable for i, t in result.per_target.items() if t.vulnerable is not None}
    gmia = gmia_relation(ranking, selected) if selected else None
    text = leaks_markdown(ranking, attack, fpr, gmia=gmia)
    (folder / "leaks.md").write_text(text)
    return {
        "attack": attack,
        "fpr": fpr,
        "num_targets": len(scores),
        "vulnerable": [int(i) for i in vulnerable(ranking)],
        "gmia": gmia,
        "markdown": text,
        "top": ranking.head(TOP).to_dict(orient="records"),
    }


def gmia_markdown(result: AuditResult) -> str:
    """GMIA on its vulnerable records, per target, with the other attacks' precision at
    as many predictions; empty when GMIA did not run.
    """
    prefix = "gmia_direct/"
    flat = result.flat()
    rows = {t: m for t, m in sorted(flat.items()) if f"{prefix}num_selected" in m}
    if not rows:
        return ""
    own = {f"{prefix}precision", f"{prefix}baseline_precision"}
    others = sorted(
        {
            k[len(prefix) : -len("_precision")]
            for m in rows.values()
            for k in m
            if k.startswith(prefix) and k.endswith("_precision") and k not in own
        }
    )
    head = ["target", "selected", "predicted", "GMIA precision", "recall", "members among selected"]
    head += [f"{o} precision" for o in others]
    head += ["whole pool: predicted", "whole pool: GMIA precision"]
    head += ["indirect: predicted", "indirect: precision"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for target, m in rows.items():
        cells = [str(target), f"{m[prefix + 'num_selected']:.0f}"]
        cells += [f"{m[prefix + 'num_predicted']:.0f}"]
        cells += [f"{m[prefix + k]:.3f}" for k in ("precision", "recall", "baseline_precision")]
        cells += [f"{m.get(f'{prefix}{o}_precision', float('nan')):.3f}" for o in others]
        cells += [f"{m.get('gmia_direct_pool/num_predicted', float('nan')):.0f}"]
        cells += [f"{m.get('gmia_direct_pool/precision', float('nan')):.3f}"]
        cells += [f"{m.get('gmia_indirect/num_predicted', float('nan')):.0f}"]
        cells += [f"{m.get('gmia_indirect/precision', float('nan')):.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def log_audit_run(
    client: MlflowClient,
    exp_id: str,
    tags: dict[str, str],
    steps: dict[int, AuditResult],
    folder: Path,
) -> str:
    """An MLflow run holding the audit: metrics ``mia/<measure>_mean|_std/<attack>``
    (:func:`mia_bench.metric_names.audit_metric_name`; counts and achieved FPRs stay in
    the audit's JSON)."""
    run = client.create_run(exp_id, run_name=f"audit-{tags['mia.audit_of']}", tags=tags)
    now = int(time.time() * 1000)
    metrics = [
        Metric(audit_metric_name(key, stat), entry[stat], now, step)
        for step, result in steps.items()
        for key, entry in result.aggregate().items()
        if is_per_epoch(key.rsplit("/", 1)[-1])
        for stat in ("mean", "std")
    ]
    for start in range(0, len(metrics), 1000):  # MLflow takes 1000 metrics per batch
        client.log_batch(run.info.run_id, metrics=metrics[start : start + 1000])
    client.log_artifacts(run.info.run_id, str(folder))
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def epochs_table(
    client: MlflowClient, results: dict[int, AuditResult], fpr: float = DEFAULT_FPRS[0]
) -> pd.DataFrame:
    """Per recorded checkpoint: mean train/test accuracy of the targets and each attack's
    AUC and TPR at ``fpr`` (the early-stopping table of the membership-vs-generalization
    study, Tables IV-V)."""
    rows, history = [], MetricHistory(client)
    for epoch, result in sorted(results.items()):
        row: dict[str, float] = {"epoch": epoch}
        for key in ("train/acc", "test/acc"):
            values = [history.at(run_id, key, epoch) for run_id in result.run_ids.values()]
            row[key] = float(np.nanmean(values)) if values else float("nan")
        for key, entry in result.aggregate().items():
            if key.endswith(("/auc", f"/tpr_at_fpr_{fpr:g}")):
                row[key] = entry["mean"]
        rows.append(row)
    return pd.DataFrame(rows)


def epochs_markdown(table: pd.DataFrame, fpr: float = DEFAULT_FPRS[0]) -> str:
    """The per-checkpoint table as markdown (accuracies and TPR in percent)."""
    tpr = f"tpr_at_fpr_{fpr:g}"
    attacks = [c.split("/")[0] for c in table.columns if c.endswith(f"/{tpr}")]
    head = ["epoch", "train acc", "test acc", *[f"{a} TPR@{100 * fpr:g}%" for a in attacks]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        cells = [str(int(r["epoch"])), f"{100 * r['train/acc']:.1f}", f"{100 * r['test/acc']:.1f}"]
        cells += [f"{100 * r[f'{a}/{tpr}']:.2f}" for a in attacks]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_audit_epochs(
    results: dict[int, AuditResult], table: pd.DataFrame, fpr: float, path: Path, title: str
) -> Path:
    """``epochs.png``: each attack's mean AUC and TPR at ``fpr`` over the targets against
    epoch, beside the targets' mean train and test accuracy (:func:`epochs_table`)."""
    from mia_bench.plots import plot_attack_vs_epoch

    tpr = f"tpr_at_fpr_{fpr:g}"
    means = {
        epoch: {
            name: {"auc": s["auc"]["mean"], tpr: s["tpr_at_fpr"][f"{fpr:g}"]["mean"]}
            for name, s in summary(result, [fpr]).items()
        }
        for epoch, result in results.items()
    }
    accuracy = {
        int(r["epoch"]): {k: r[k] for k in ("train/acc", "test/acc")} for _, r in table.iterrows()
    }
    return plot_attack_vs_epoch(means, accuracy, fpr, path, f"{title}: mean over targets")


def depth_table(results: dict[int, AuditResult], layers: Sequence[str]) -> pd.DataFrame:
    """Layer-depth leakage: the embedding attack's AUC at each layer, per audited epoch.

    One row per (epoch, layer), layers shallow to deep as given, with the mean and std
    over targets of the AUC and of the TPR at each reported FPR.
    """
    rows = []
    for epoch, result in sorted(results.items()):
        agg = result.aggregate()
        for depth, layer in enumerate(layers):
            name = layer_attack_name(layer)
            if f"{name}/auc" not in agg:
                continue
            row = {"epoch": epoch, "depth": depth, "layer": layer}
            for key, entry in agg.items():
                if key.startswith(f"{name}/") and key.split("/")[1].startswith(("auc", "tpr")):
                    metric = key.split("/")[1]
                    row[metric], row[f"{metric}_std"] = entry["mean"], entry["std"]
            rows.append(row)
    return pd.DataFrame(rows)


def layer_epoch_markdown(
    table: pd.DataFrame, mean: str = "auc", std: str = "auc_std", title: str = "AUC"
) -> str:
    """A layers x epochs table as markdown: a row per layer, ``mean ± std`` per epoch.

    Args:
        table: rows with columns ``depth``, ``layer``, ``epoch`` and the two named ones.
        mean: the column of means.
        std: the column of standard deviations.
        title: what the numbers are (column headers read ``<title>, epoch <e>``).

    >>> t = pd.DataFrame([(0, "fc0", 1, 0.61, 0.01), (1, "embedding", 1, 0.55, 0.02)],
    ...                  columns=["depth", "layer", "epoch", "auc", "auc_std"])
    >>> print(layer_epoch_markdown(t))
    | depth | layer | AUC, epoch 1 |
    |---|---|---|
    | 0 | fc0 | 0.610 ± 0.010 |
    | 1 | embedding | 0.550 ± 0.020 |
    <BLANKLINE>
    """
    epochs = sorted(table["epoch"].unique())
    head = ["depth", "layer", *[f"{title}, epoch {e}" for e in epochs]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (depth, layer), rows in table.groupby(["depth", "layer"], sort=True):
        cells = {r["epoch"]: f"{r[mean]:.3f} ± {r[std]:.3f}" for _, r in rows.iterrows()}
        lines.append(
            f"| {depth} | {layer} | " + " | ".join(cells.get(e, "") for e in epochs) + " |"
        )
    return "\n".join(lines) + "\n"


def write_depth_outputs(
    results: dict[int, AuditResult], layers: Sequence[str], folder: Path
) -> str | None:
    """Write ``depth.csv``, ``depth.md`` and ``depth.png``; returns the markdown.

    None (nothing written) when fewer than two layers were attacked.
    """
    table = depth_table(results, layers)
    if table.empty or table["layer"].nunique() < 2:
        return None
    table.to_csv(folder / "depth.csv", index=False)
    text = layer_epoch_markdown(table)
    (folder / "depth.md").write_text(text)
    curves = {
        f"epoch {e}": dict(zip(rows["layer"], rows["auc"], strict=True))
        for e, rows in table.groupby("epoch")
    }
    plot_layer_depth(curves, folder / "depth.png", ylabel="membership AUC (nn_embedding)")
    return text
