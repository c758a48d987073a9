"""Per-epoch tables of the seed-000 text groups, from what their fits logged in MLflow.

    python docs/results/embedding_attack_targets/tables.py   (from the repository root)

Writes ``<group>_epochs.md`` (mean over the group's runs of train/test accuracy and the
fit-time loss attack, per recorded epoch) and, for groups with property inference,
``<group>_property_<name>.md`` (property AUC and accuracy per layer and epoch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mia_bench.audit.property_report import property_markdown, property_table
from mia_bench.store.references import client_and_experiment, group_runs
from mia_bench.store.runs import MetricHistory, MlflowSettings

HERE = Path(__file__).parent
GROUPS = {
    "imdb_bert": {
        "layers": [
            "bert.embeddings",
            "bert.encoder.layer.1",
            "bert.encoder.layer.3",
            "bert.encoder.layer.5",
            "embedding",
        ],
        "properties": ["extreme_rating"],
    },
    "agnews_transformer": {"layers": ["token_embed", "layers.0", "layers.1", "embedding"]},
}
EPOCH_METRICS = {
    "train acc": "train/acc",
    "test acc": "test/acc",
    "gap acc": "gap/acc",
    "loss AUC": "mia/loss/auc",
    "loss TPR@0.1% FPR (%)": "mia/loss/tpr_at_fpr_0.001",
}


def epochs_markdown(history: MetricHistory, runs: list, epochs: list[int]) -> str:
    head = ["epoch", *EPOCH_METRICS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for epoch in epochs:
        cells = [str(epoch)]
        for name, key in EPOCH_METRICS.items():
            values = np.array([history.at(r.run_id, key, epoch) for r in runs])
            scale = 100 if "TPR" in name else 1
            cells.append(f"{scale * np.nanmean(values):.3f} ± {scale * np.nanstd(values):.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    client, exp_id = client_and_experiment(MlflowSettings())
    history = MetricHistory(client)
    for group, spec in GROUPS.items():
        runs = group_runs(client, exp_id, group)
        if not runs:
            print(f"{group}: no runs, skipped")
            continue
        epochs = runs[0].epochs()
        text = f"# {group}: {len(runs)} runs, mean ± std over runs\n\n"
        (HERE / f"{group}_epochs.md").write_text(text + epochs_markdown(history, runs, epochs))
        for name in spec.get("properties", []):
            parts = [f"# {group}: property `{name}` from each layer ({len(runs)} runs)\n"]
            for metric in ("auc", "balanced_acc", "acc"):
                table = property_table(history, runs, name, spec["layers"], epochs, metric)
                parts.append(f"\n## {metric}\n\n" + property_markdown(table, title=metric))
            majority = [history.at(r.run_id, f"property/{name}/majority_acc", "last") for r in runs]
            parts.append(f"\nmajority-class accuracy: {np.nanmean(majority):.3f}\n")
            (HERE / f"{group}_property_{name}.md").write_text("".join(parts))
        print(f"{group}: {len(runs)} runs, epochs {epochs}")


if __name__ == "__main__":
    main()
