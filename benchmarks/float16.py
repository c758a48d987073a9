"""What storing logits as float16 (``--signals.logits_dtype float16``) does to every attack.

The sufficient statistics are computed from the float32 logits before they are stored, so
the attacks reading them (LiRA, RMIA, the calibrated attacks, GMIA's direct test) do not
change. The others read the stored logits: this scores every registered attack of every
target of a trained group twice, with its float32 logits and with them rounded to float16
(targets' and references'), and writes the largest AUC and TPR differences to
``benchmarks/results/float16_<group>.json``::

    python -m benchmarks.float16 --group location_mlp
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np

from benchmarks.scoring import RESULTS
from mia_bench.attacks import ATTACKS
from mia_bench.audit.engine import audit_target, needs_of
from mia_bench.store.groups import client_and_experiment, scan_group
from mia_bench.store.references import open_pool
from mia_bench.store.runs import MlflowSettings


def half(logits: np.ndarray) -> np.ndarray:
    """Logits as a float16 store gives them back."""
    return np.asarray(logits, dtype=np.float16).astype(np.float32)


def compare(group: str, settings: MlflowSettings, layers: tuple[str, ...]) -> dict:
    """attack -> the largest |float32 - float16| of its AUC and TPRs over the targets."""
    client, exp_id = client_and_experiment(settings)
    members = scan_group(client, exp_id, group)
    members.require(allow_partial=False)
    runs = members.members
    attacks = list(ATTACKS.values())
    needs = replace(needs_of(attacks, layers), logits=True)
    pool = open_pool(runs, "last", needs)
    out: dict[str, float] = {}
    for target in pool.runs:
        refs = pool.references(target.run.run_id, target.keep)
        full = audit_target(target.signals, target.keep, refs, attacks, sweep_layers=())
        rounded = audit_target(
            replace(target.signals, logits=half(target.signals.logits)),
            target.keep,
            replace(refs, logits=half(refs.logits)),
            attacks,
            sweep_layers=(),
        )
        for name, metrics in full.metrics.items():
            for key, value in _numbers(metrics).items():
                diff = abs(value - _numbers(rounded.metrics[name])[key])
                out[f"{name}/{key}"] = max(out.get(f"{name}/{key}", 0.0), diff)
    return out


def _numbers(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", required=True)
    parser.add_argument("--layers", default="embedding")
    parser.add_argument("--tracking-uri", default=MlflowSettings.tracking_uri)
    args = parser.parse_args(argv)
    settings = MlflowSettings(tracking_uri=args.tracking_uri)
    result = compare(args.group, settings, tuple(args.layers.split(",")))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"float16_{args.group}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=True))
    moved = {k: v for k, v in result.items() if v > 0}
    print(f"{len(moved)} of {len(result)} metrics moved; largest: ")
    for key, value in sorted(moved.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {key:40s} {value:.2e}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
