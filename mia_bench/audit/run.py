"""One ``mia-bench audit``: of a group (leave-one-out) or of one checkpoint; writes and logs."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mia_bench.attacks import ATTACKS, get_attack
from mia_bench.audit.checkpoint import config_of_run, load_keep_file, signals_of_checkpoint
from mia_bench.audit.engine import (
    AuditResult,
    audit_group,
    build_inputs,
    needs_embeddings,
    score_attacks,
    summarize_scores,
)
from mia_bench.audit.report import (
    epochs_markdown,
    epochs_table,
    log_audit_run,
    write_depth_outputs,
    write_outputs,
)
from mia_bench.store.groups import client_and_experiment, group_runs
from mia_bench.store.references import check_same_pool, load_references
from mia_bench.store.runs import MlflowSettings


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
    extra_tags: dict[str, str] | None = None,
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
            table = epochs_table(client, results)
            table.to_csv(folder / "epochs.csv", index=False)
            (folder / "epochs.md").write_text(epochs_markdown(table))
            doc["epochs_markdown"] = (folder / "epochs.md").read_text()
        doc["markdown"] = (folder / "audit.md").read_text()
        depth = write_depth_outputs(results, layers, folder)
        if depth is not None:
            doc["depth_markdown"] = depth
        tags = {
            "mia.audit_of": group,
            "mia.references": ",".join(references or [group]),
            "mia.same_recipe": str(not references or list(references) == [group]),
            **(extra_tags or {}),
        }
        doc["group"] = group
        doc["references"] = list(references or [group])
        (folder / "audit.json").write_text(json.dumps(doc, indent=2))  # with every epoch
        doc["run_id"] = log_audit_run(client, exp_id, tags, results, folder)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(doc, indent=2))
    return doc


def audit_checkpoint(
    settings: MlflowSettings,
    checkpoint: Path,
    references: Sequence[str],
    config: Path | None = None,
    keep: Path | None = None,
    epoch: str = "last",
    attacks: Sequence[str] | None = None,
    layers: Sequence[str] = ("embedding",),
    fprs: Sequence[float] = (0.001, 0.01),
    output: Path = Path("audit.json"),
) -> dict[str, Any]:
    """Attack one model given as a checkpoint, with reference groups; returns the JSON doc.

    The config and keep row default to those of the MLflow run that wrote the
    checkpoint (``mlruns/checkpoints/<run_id>/...``).
    """
    client, exp_id = client_and_experiment(settings)
    found = config_of_run(client, checkpoint) if config is None or keep is None else None
    if (config is None or keep is None) and found is None:
        raise ValueError(
            f"{checkpoint} is not in a mia-bench run's checkpoint folder: pass --config "
            "(the fit config of the model) and --keep (a .npy bool[N] keep row)"
        )
    config = config or found[0]
    keep_path = keep or found[1]
    signals, data = signals_of_checkpoint(checkpoint, config, tuple(layers))
    keep_row = load_keep_file(keep_path, data.num_examples)
    own_run = checkpoint.resolve().parent.name  # a run is never its own reference
    reference_runs = [
        r for g in references for r in group_runs(client, exp_id, g) if r.run_id != own_run
    ]
    target_tags = {f"mia.{k}": str(v) for k, v in data.membership_info().items()}
    check_same_pool(target_tags, reference_runs)
    chosen = [get_attack(a) for a in attacks] if attacks else list(ATTACKS.values())
    layers = tuple(layers) if needs_embeddings(chosen) else ()
    refs = load_references(reference_runs, epoch, layers, target_keep=keep_row)
    inputs = build_inputs(signals, refs, keep_row)
    scores = score_attacks(chosen, inputs, layers)
    result = AuditResult(epoch=signals.epoch, keep=keep_row, scores=scores)
    result.per_target[0] = summarize_scores(scores, keep_row, fprs, inputs)
    result.num_references[0] = 0 if refs is None else len(refs.run_ids)
    result.target_epochs[0] = signals.epoch
    with tempfile.TemporaryDirectory() as tmp:
        doc = write_outputs(result, fprs, Path(tmp), title=f"{checkpoint.name}")
        doc["markdown"] = (Path(tmp) / "audit.md").read_text()
        tags = {"mia.audit_of": str(checkpoint), "mia.references": ",".join(references)}
        doc["run_id"] = log_audit_run(client, exp_id, tags, {signals.epoch: result}, Path(tmp))
    doc |= {"checkpoint": str(checkpoint), "references": list(references)}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(doc, indent=2))
    return doc
