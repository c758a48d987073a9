"""Scores of a real group: the full-logits path against the sufficient-statistics path.

Every run of a trained group is the target in turn (leave-one-out, as ``mia-bench audit``),
scored by the frozen full-logits code (``benchmarks/baseline``, fed the stored float32
logits) and by the audit engine's path (the group's float32 statistics stacked as
memmaps). Writes the largest score difference per attack and the AUC and TPR of both to
``benchmarks/results/agreement_<group>.json``. Run it where the group's store is::

    mia-bench fleet -c lightning_configs/location_mlp.yaml \
        --data.root ../shared/data/location --runs 0:16
    python -m benchmarks.agreement --group location_mlp
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from benchmarks.baseline.inputs import AttackInputs as OldInputs
from benchmarks.baseline.pairs import PAIRS
from benchmarks.scoring import RESULTS
from mia_bench.audit.engine import build_inputs, needs_of
from mia_bench.metrics import auc, tpr_at_fpr
from mia_bench.store.groups import client_and_experiment, scan_group
from mia_bench.store.references import load_runs, open_pool
from mia_bench.store.runs import MlflowSettings


def agreement(group: str, settings: MlflowSettings) -> dict:
    """Per attack: the largest |old - new| over all targets, and both paths' metrics."""
    from mia_bench.attacks import get_attack

    client, exp_id = client_and_experiment(settings)
    members = scan_group(client, exp_id, group)
    members.require(allow_partial=False)
    runs = members.members
    loaded = load_runs(runs, "last")
    needs = needs_of([get_attack(n) for n in PAIRS if n != "gmia_direct"])
    pool = open_pool(runs, "last", needs)
    out: dict[str, dict] = {name: {"max_abs_diff": 0.0, "targets": []} for name in PAIRS}
    for target in loaded:
        others = [r for r in loaded if r.run.run_id != target.run.run_id]
        old = OldInputs(
            target.signals.logits,
            target.signals.labels,
            np.stack([r.signals.logits for r in others]),
            np.stack([r.keep for r in others]),
            ~target.keep,
        )
        refs = pool.references(target.run.run_id, target.keep)
        new = build_inputs(target.signals, refs, target.keep)
        for name, (old_fn, new_fn) in PAIRS.items():
            a, b = old_fn(old), new_fn(new)
            if name == "gmia_direct":  # p-values: lower = member
                a, b = -a, -b
            entry = out[name]
            entry["max_abs_diff"] = max(entry["max_abs_diff"], float(np.abs(a - b).max()))
            entry["max_rel_diff"] = max(
                entry.get("max_rel_diff", 0.0), float(np.abs(a - b).max() / np.abs(a).max())
            )
            entry["targets"].append(
                {"auc": [auc(a, target.keep), auc(b, target.keep)]}
                | {
                    f"tpr@{f}": [tpr_at_fpr(s, target.keep, f).tpr for s in (a, b)]
                    for f in (0.001, 0.01)
                }
            )
    for entry in out.values():
        entry["max_metric_diff"] = max(
            abs(v[0] - v[1]) for t in entry["targets"] for v in t.values()
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", required=True)
    parser.add_argument("--tracking-uri", default=MlflowSettings.tracking_uri)
    args = parser.parse_args(argv)
    settings = MlflowSettings(tracking_uri=args.tracking_uri)
    result = agreement(args.group, settings)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"agreement_{args.group}.json"
    path.write_text(json.dumps(result, indent=2))
    for name, entry in result.items():
        print(
            f"{name:24s} max |diff| {entry['max_abs_diff']:.2e} (relative "
            f"{entry['max_rel_diff']:.2e}); largest AUC/TPR difference "
            f"{entry['max_metric_diff']:.2e}"
        )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
