"""One ``mia-bench audit``: of a group (leave-one-out) or of one checkpoint; writes and logs."""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mia_bench.attacks import ATTACKS, get_attack
from mia_bench.audit.checkpoint import config_and_keep, load_keep_file, signals_of_checkpoint
from mia_bench.audit.engine import AuditResult, audit_group, audit_target, needs_of
from mia_bench.audit.page import write_report
from mia_bench.audit.report import (
    epochs_markdown,
    epochs_table,
    log_audit_run,
    plot_audit_epochs,
    write_depth_outputs,
    write_outputs,
)
from mia_bench.errors import UserError
from mia_bench.intervals import DEFAULT_RESAMPLES
from mia_bench.metrics import DEFAULT_FPRS
from mia_bench.store.artifacts import as_stored
from mia_bench.store.groups import GroupMembers, client_and_experiment, scan_group
from mia_bench.store.references import check_same_pool, load_references
from mia_bench.store.runs import MetricHistory, MlflowSettings


def resolve_targets(members: GroupMembers, num_targets: int) -> list:
    """The first ``num_targets`` members of the group (lowest run indices).

    Raises:
        UserError: ``num_targets`` < 1, or more targets than the group has runs.
    """
    if num_targets < 1:
        raise UserError(f"--targets {num_targets}: an audit needs at least 1 target run")
    size = members.num_runs or 0
    if num_targets > size:
        raise UserError(
            f"--targets {num_targets} is more than group {members.group!r} has runs "
            f"({size}): pass --targets {size} or fewer"
        )
    wanted = list(range(num_targets))
    return [r for r in members.members if r.run_index in wanted]


def reference_members(
    client, exp_id: str | None, groups: Sequence[str], allow_partial: bool
) -> tuple[list, list[GroupMembers]]:
    """The member runs of the reference groups, each group checked like the audited one.

    Raises:
        UserError: a reference group has no runs (never a silent fallback to the
            audited group), or is incomplete without ``allow_partial``.
    """
    runs, scanned = [], []
    for name in groups:
        found = scan_group(client, exp_id, name)
        if not found.members:
            raise UserError(
                f"reference group {name!r} has no finished runs in this experiment: check "
                f"the name (mia-bench compare lists audited groups) or train it first with "
                f"mia-bench fleet ... --group {name}"
            )
        found.require(allow_partial=allow_partial)
        runs += found.members
        scanned.append(found)
    return runs, scanned


def audit_epochs(members: GroupMembers, targets: list, epoch: str) -> list[int | str]:
    """The epochs to audit: ``"last"``, every recorded one (``"all"``) or one number.

    Raises:
        UserError: the epoch is not a number, or no target recorded it.
    """
    recorded = sorted({e for r in targets for e in r.epochs()})
    if epoch == "last":
        return ["last"]
    if epoch == "all":
        return list(recorded)
    try:
        number = int(epoch)
    except ValueError:
        raise UserError(f"--epoch {epoch!r}: give 'last', 'all' or an epoch number") from None
    lacking = [r.run_index for r in targets if number not in r.epochs()]
    if lacking:
        raise UserError(
            f"--epoch {number}: runs {lacking} of group {members.group!r} recorded no "
            f"signals at that epoch; recorded epochs: {recorded}"
        )
    return [number]


def default_attacks(targets: list, epochs: list[int | str], layers: Sequence[str]) -> tuple:
    """Every registered attack, less the embedding attacks when the targets recorded no
    embeddings of ``layers`` at the audited epochs (a run records only the layers its
    own attacks use); returns ``(attacks, names left out)``."""
    every = list(ATTACKS.values())

    def recorded(run, e) -> bool:
        epoch = run.epochs()[-1] if e == "last" else e
        return all(run.has(f"embeddings/epoch_{epoch:03d}/{layer}.npy") for layer in layers)

    if all(recorded(r, e) for r in targets for e in epochs if r.epochs()):
        return every, []
    return [a for a in every if not a.needs_embeddings], [
        a.name for a in every if a.needs_embeddings
    ]


def run_audit(
    settings: MlflowSettings,
    group: str,
    epoch: str = "last",
    num_targets: int = 4,
    attacks: Sequence[str] | None = None,
    references: Sequence[str] | None = None,
    layers: Sequence[str] = ("embedding",),
    fprs: Sequence[float] = DEFAULT_FPRS,
    output: Path = Path("audit.json"),
    extra_tags: dict[str, str] | None = None,
    allow_partial: bool = False,
    bootstrap: int = DEFAULT_RESAMPLES,
) -> dict[str, Any]:
    """Audit ``group`` and log an MLflow audit run; returns the JSON document.

    Every number comes with its 95% interval (``bootstrap`` resamples for AUC and TPR,
    exact for TPR and FPR) and each attack with the epsilon it certifies.

    Only the runs that pass the group membership rule (:mod:`mia_bench.store.groups`)
    take part; the document records which run ids and epochs were used and which runs
    were left out, and why.

    Raises:
        UserError: the group (or a reference group) is missing or incomplete (unless
            ``allow_partial``), the epoch or the targets do not exist, or the
            references do not match the group's pool.
    """
    client, exp_id = client_and_experiment(settings)
    members = scan_group(client, exp_id, group)
    if not members.members:
        raise UserError(
            f"group {group!r} has no finished runs in experiment {settings.experiment_name!r} "
            f"of {settings.tracking_uri}; train it with: mia-bench fleet -c CONFIG --runs 0:16"
            + (f" ({members.report()})" if members.excluded else "")
        )
    members.require(allow_partial=allow_partial)
    targets = resolve_targets(members, num_targets)
    if not targets:
        raise UserError(f"none of the first {num_targets} runs of group {group!r} is usable")
    reference_runs, scanned = members.members, [members]
    if references:
        reference_runs, extra = reference_members(client, exp_id, references, allow_partial)
        check_same_pool(targets[0].tags, reference_runs)
        scanned += extra
    elif len(members.members) < 2:
        raise UserError(f"group {group!r} has 1 usable run; an audit needs a second one")
    epochs = audit_epochs(members, targets, epoch)
    left_out: list[str] = []
    if attacks:
        try:
            chosen = [get_attack(a) for a in attacks]
        except ValueError as err:
            raise UserError(f"--attacks: {err}") from None
    else:
        chosen, left_out = default_attacks(targets, epochs, layers)
    results: dict[int, AuditResult] = {}
    for e in epochs:
        result = audit_group(
            targets, chosen, e, reference_runs, layers, fprs, allow_partial=allow_partial,
            bootstrap=bootstrap,
        )  # fmt: skip
        results[max(result.target_epochs.values())] = result
    doc = _write_and_log(client, exp_id, group, references, results, layers, fprs, extra_tags)
    doc["excluded"] = [vars(x) for s in scanned for x in s.excluded]
    doc["attacks_left_out"] = left_out
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(doc, indent=2))
    return doc


def accountant_epsilons(client, result: AuditResult) -> dict[int, float]:
    """Target -> DP-SGD's ``privacy/epsilon`` at the epoch audited (targets without one
    are left out)."""
    history = MetricHistory(client)
    values = {
        i: history.at(run_id, "privacy/epsilon", result.target_epochs[i])
        for i, run_id in result.run_ids.items()
    }
    return {i: v for i, v in values.items() if not math.isnan(v)}


def _write_and_log(client, exp_id, group, references, results, layers, fprs, extra_tags) -> dict:
    last_step = max(results)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        last = results[last_step]
        doc = write_outputs(
            last,
            fprs,
            folder,
            title=f"{group}, run {min(last.per_target)} as target",
            accountant=accountant_epsilons(client, last),
        )
        if len(results) > 1:
            doc["epochs"] = {
                str(k): write_outputs(
                    r, fprs, folder / f"epoch_{k:03d}", "", accountant_epsilons(client, r)
                )
                for k, r in results.items()
            }
            table = epochs_table(client, results, min(fprs))
            table.to_csv(folder / "epochs.csv", index=False)
            (folder / "epochs.md").write_text(epochs_markdown(table, min(fprs)))
            doc["epochs_markdown"] = (folder / "epochs.md").read_text()
            plot_audit_epochs(results, table, min(fprs), folder / "epochs.png", group)
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
        gallery = _gallery(client, last, doc, folder)
        write_report(doc, folder, *gallery)
        (folder / "audit.json").write_text(json.dumps(doc, indent=2))  # with every epoch
        doc["run_id"] = log_audit_run(client, exp_id, tags, results, folder)
        doc["experiment_id"] = exp_id
    return doc


GALLERY_SIZE = 24  # records shown in the gallery


def _gallery(client, result: AuditResult, doc: dict, folder: Path) -> tuple[str, str]:
    """The gallery of the records that leak, from the first target run's logged config:
    ``(markdown, html)``; ``("", "")`` and a ``gallery_note`` in ``doc`` when the pool
    cannot be shown."""
    from mia_bench.audit.gallery import gallery_for_config

    if not doc.get("leaks"):
        return "", ""
    run_id = result.run_ids[min(result.run_ids)]
    records = pd.read_csv(folder / "leaks.csv").head(GALLERY_SIZE)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            config = Path(client.download_artifacts(run_id, "config.yaml", tmp))
        except Exception:  # noqa: BLE001 - a run of a plain Trainer logs no config
            doc["gallery_note"] = f"no gallery: run {run_id} logged no config.yaml"
            return "", ""
        title = f"The {len(records)} records that leak most ({doc['leaks']['attack']})"
        gallery = gallery_for_config(records, config, folder, title)
    if isinstance(gallery, str):
        doc["gallery_note"] = gallery
        return "", ""
    doc["gallery"] = {"kind": gallery.kind, "files": gallery.files}
    return gallery.markdown, gallery.html


def audit_checkpoint(
    settings: MlflowSettings,
    checkpoint: Path,
    references: Sequence[str],
    config: Path | None = None,
    keep: Path | None = None,
    epoch: str = "last",
    attacks: Sequence[str] | None = None,
    layers: Sequence[str] = ("embedding",),
    fprs: Sequence[float] = DEFAULT_FPRS,
    output: Path = Path("audit.json"),
    allow_partial: bool = False,
    bootstrap: int = DEFAULT_RESAMPLES,
) -> dict[str, Any]:
    """Attack one model given as a checkpoint, with reference groups; returns the JSON doc.

    The config and keep row default to those of the MLflow run that wrote the
    checkpoint (``mlruns/checkpoints/<run_id>/...``); the config's ``model.class_path``
    names the model's class (mia-bench's Classifier, or a LightningModule of the user's).
    """
    client, exp_id = client_and_experiment(settings)
    config, keep_path = config_and_keep(client, checkpoint, config, keep)
    signals, data = signals_of_checkpoint(checkpoint, config, tuple(layers))
    signals = as_stored(signals)  # its statistics as a recorded run's: from float32 logits
    keep_row = load_keep_file(keep_path, data.num_examples)
    own_run = checkpoint.resolve().parent.name  # a run is never its own reference
    runs, _ = reference_members(client, exp_id, references, allow_partial)
    reference_runs = [r for r in runs if r.run_id != own_run]
    target_tags = {f"mia.{k}": str(v) for k, v in data.membership_info().items()}
    check_same_pool(target_tags, reference_runs)
    chosen = [get_attack(a) for a in attacks] if attacks else list(ATTACKS.values())
    needs = needs_of(chosen, layers)
    layers = needs.layers
    refs = load_references(reference_runs, epoch, needs, target_keep=keep_row)
    result = AuditResult(epoch=signals.epoch, keep=keep_row, labels=np.asarray(signals.labels))
    result.per_target[0] = audit_target(signals, keep_row, refs, chosen, fprs, layers, bootstrap)
    result.keeps[0] = np.asarray(keep_row, dtype=bool)
    result.target_epochs[0] = signals.epoch
    with tempfile.TemporaryDirectory() as tmp:
        doc = write_outputs(result, fprs, Path(tmp), title=f"{checkpoint.name}")
        doc["markdown"] = (Path(tmp) / "audit.md").read_text()
        doc |= {"checkpoint": str(checkpoint), "references": list(references)}
        write_report(doc, Path(tmp))
        (Path(tmp) / "audit.json").write_text(json.dumps(doc, indent=2))
        tags = {"mia.audit_of": str(checkpoint), "mia.references": ",".join(references)}
        doc["run_id"] = log_audit_run(client, exp_id, tags, {signals.epoch: result}, Path(tmp))
        doc["experiment_id"] = exp_id
    doc |= {"checkpoint": str(checkpoint), "references": list(references)}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(doc, indent=2))
    return doc
