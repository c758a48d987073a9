"""Offline RMIA on a trained group with the temperature and the offline a changed one at a
time (results: ``benchmarks/results/rmia_location_mlp.md``). Run it where the store is::

    python -m benchmarks.rmia_variants --group location_mlp
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

from mia_bench.attacks import rmia
from mia_bench.audit.engine import build_inputs
from mia_bench.metrics import auc, tpr_at_fpr
from mia_bench.store.groups import client_and_experiment, scan_group
from mia_bench.store.references import ReferenceNeeds, open_pool
from mia_bench.store.runs import MlflowSettings

VARIANTS = {
    "T = 1, a = 0.3 (before)": {"temperature": 1.0, "a": 0.3},
    "T = 1, a fitted": {"temperature": 1.0},
    "T = 2, a = 0.3": {"a": 0.3},
    "T = 2, a fitted (after)": {},
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", required=True)
    args = parser.parse_args(argv)
    client, exp = client_and_experiment(MlflowSettings())
    members = scan_group(client, exp, args.group)
    members.require()
    needs = ReferenceNeeds(statistics=("log_p", "log_p_t2"), logits=True)
    pool = open_pool(members.members, "last", needs)
    rows: dict[str, list[tuple[float, float, float]]] = {v: [] for v in VARIANTS}
    fitted = Counter()
    for target in pool.runs:
        x = build_inputs(
            target.signals, pool.references(target.run.run_id, target.keep), target.keep
        )
        fitted[rmia.fit_offline_a(x.reference_stats("log_p_t2"), x.ref_keep, "log_p_t2")] += 1
        for label, kwargs in VARIANTS.items():
            s = rmia.rmia(x, online=False, **kwargs)
            tprs = [tpr_at_fpr(s, target.keep, f).tpr for f in (0.001, 0.01)]
            rows[label].append((auc(s, target.keep), *tprs))
    print("| RMIA offline | AUC | TPR@0.001 FPR | TPR@0.01 FPR |\n|---|---|---|---|")
    for label, values in rows.items():
        m, s = np.mean(values, axis=0), np.std(values, axis=0)
        print(
            f"| {label} | {m[0]:.3f} ± {s[0]:.3f} | {100 * m[1]:.2f}% ± {100 * s[1]:.2f} | "
            f"{100 * m[2]:.2f}% ± {100 * s[2]:.2f} |"
        )
    print(f"fitted a (T = 2): {dict(fitted)}")


if __name__ == "__main__":
    main()
