"""One ``mia-bench audit``: find the group, attack leave-one-out, write and log the results."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mia_bench.attacks import ATTACKS, get_attack
from mia_bench.audit import AuditResult, audit_group
from mia_bench.audit_report import log_audit_run, write_outputs
from mia_bench.references import check_same_pool, client_and_experiment, group_runs
from mia_bench.runs import MlflowSettings


def run_audit(
    settings: MlflowSettings,
    group: str,
    epoch: str = "last",
    num_targets: int = 4,
    attacks: Sequence[str] | None = None,
    references: Sequence[str] | None = None,
    layers: Sequence[str] = ("embedding",),
    fprs: Sequence[float] = (0.001, 0.01),
    output: Path = Path("audit.json"),
) -> dict[str, Any]:
    """Audit ``group`` and log an MLflow audit run; returns the JSON document.

    Raises:
        ValueError: the group has fewer than 2 runs, or references do not match its pool.
    """
    client, exp_id = client_and_experiment(settings)
    runs = group_runs(client, exp_id, group)
    if len(runs) < 2:
        raise ValueError(
            f"group {group!r} has {len(runs)} run(s) in experiment "
            f"{settings.experiment_name!r} of {settings.tracking_uri}; an audit needs at "
            "least 2 (train them with: mia-bench fleet -c CONFIG --runs 0:16)"
        )
    reference_runs = None
    if references:
        reference_runs = [r for g in references for r in group_runs(client, exp_id, g)]
        check_same_pool(runs[0].tags, reference_runs)
    chosen = [get_attack(a) for a in attacks] if attacks else list(ATTACKS.values())
    epochs: list[int | str] = runs[0].epochs() if epoch == "all" else [epoch]
    results: dict[int, AuditResult] = {}
    for e in epochs:
        result = audit_group(runs, chosen, e, num_targets, reference_runs, layers, fprs)
        step = runs[0].resolve_epoch(e)
        results[step if step is not None else 0] = result
    last_step = max(results)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        doc = write_outputs(
            results[last_step],
            fprs,
            folder,
            title=f"{group}, run {min(results[last_step].per_target)} as target",
        )
        if len(results) > 1:
            doc["epochs"] = {
                str(k): write_outputs(r, fprs, folder / f"epoch_{k:03d}", "")
                for k, r in results.items()
            }
        doc["markdown"] = (folder / "audit.md").read_text()
        tags = {
            "mia.audit_of": group,
            "mia.references": ",".join(references or [group]),
            "mia.same_recipe": str(not references or list(references) == [group]),
        }
        doc["run_id"] = log_audit_run(client, exp_id, tags, results, folder)
    doc["group"] = group
    doc["references"] = list(references or [group])
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(doc, indent=2))
    return doc
