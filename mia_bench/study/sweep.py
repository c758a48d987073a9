"""``mia-bench sweep SWEEP.yaml``: train and audit many groups (recipes), resumably.

A sweep file names a base config, the runs of every group, and the recipes; each recipe
is a group trained with ``mia-bench fleet`` (finished runs are skipped, interrupted ones
resume), then audited with ``mia-bench audit`` (an audit already logged for the sweep
is not redone), and finally all of them are compared with ``mia-bench compare``::

    name: recipes
    configs: [lightning_configs/cifar10_partial_cnn.yaml]   # given to every recipe
    args: ["--trainer.max_epochs=15", "--data.num_runs=8"]  # ditto
    runs: "0:8"
    workers: 2
    recipes:                          # trained in this order (teachers first)
      none: {}
      crop: {configs: [lightning_configs/augment/crop.yaml]}
      distill: {configs: [lightning_configs/defense/self_distillation.yaml],
                args: ["--model.defense.init_args.teacher_group=none"]}
    audit: {epoch: all, targets: 8, attacks: [loss, lira_online_fixed_var]}
                                      # runs covering only part of --data.num_runs: the
                                      # audits use the runs trained (allow_partial)
    extra_audits:                     # e.g. an attacker who did not know the recipe
      - {group: crop, references: [none]}
    compare: {attacks: [loss, lira_online_fixed_var], output_dir: docs/results/recipes,
              all_epochs: true,   # every audited checkpoint is a point of the gap scatter
              baseline: none}     # the recipe the others are tested against
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mia_bench.audit.run import run_audit
from mia_bench.lightning_cli import parse_fit_config
from mia_bench.metrics import DEFAULT_FPRS
from mia_bench.store.groups import client_and_experiment
from mia_bench.store.runs import MlflowSettings, config_fingerprint
from mia_bench.study.compare import compare
from mia_bench.study.fleet import Fleet, parse_runs, plan


def load_sweep(path: Path) -> dict[str, Any]:
    """Read and check a sweep file."""
    doc = yaml.safe_load(Path(path).read_text())
    missing = [k for k in ("runs", "recipes") if k not in (doc or {})]
    if missing:
        raise ValueError(f"sweep file {path} lacks {missing}; see `mia-bench sweep --help`")
    doc.setdefault("name", Path(path).stem)
    return doc


def fit_args(doc: dict, recipe: dict) -> list[str]:
    """The ``mia-bench fit`` arguments of one recipe: base configs, recipe configs, args."""
    configs = [*doc.get("configs", []), *(recipe or {}).get("configs", [])]
    return [a for c in configs for a in ("-c", c)] + [
        *doc.get("args", []),
        *(recipe or {}).get("args", []),
    ]


def _audited(settings: MlflowSettings, sweep: str, group: str, refs: str) -> bool:
    client, exp_id = client_and_experiment(settings)
    if exp_id is None:
        return False
    query = (
        f"tags.`mia.audit_of` = '{group}' and tags.`mia.sweep` = '{sweep}' "
        f"and tags.`mia.references` = '{refs}'"
    )
    return bool(client.search_runs([exp_id], filter_string=query, max_results=1))


def _covers_groups(doc: dict, config) -> bool:
    """Whether the sweep's ``runs`` are every run index of its groups.

    A sweep that trains only some of ``--data.num_runs`` chose so explicitly; its audits
    then use the runs it trained (``allow_partial``), which the fleet has just finished.
    """
    return set(parse_runs(str(doc["runs"]))) == set(range(config.data.init_args.num_runs))


def _audit(
    doc: dict, settings: MlflowSettings, group: str, refs: list[str] | None, partial: bool
) -> None:
    label = ",".join(refs or [group])
    if _audited(settings, doc["name"], group, label):
        print(f"[sweep {doc['name']}] audit of {group} (references {label}): done before")
        return
    opts = doc.get("audit", {})
    run_audit(
        settings,
        group,
        epoch=str(opts.get("epoch", "last")),
        num_targets=int(opts.get("targets", 4)),
        attacks=opts.get("attacks"),
        references=refs,
        fprs=opts.get("fprs", DEFAULT_FPRS),
        output=Path(opts.get("output_dir", "audits")) / f"{group}__{label}.json",
        extra_tags={"mia.sweep": doc["name"]},
        allow_partial=partial or bool(opts.get("allow_partial", False)),
    )
    print(f"[sweep {doc['name']}] audit of {group} (references {label}): logged")


def run_sweep(path: Path) -> int:
    """Train, audit and compare every recipe of the sweep; returns failed runs."""
    doc = load_sweep(path)
    failed = 0
    settings, partial = None, False
    for name, recipe in doc["recipes"].items():
        args = fit_args(doc, recipe) + [f"--group={name}"]
        config, group = parse_fit_config(args)
        settings = MlflowSettings(**vars(config.mlflow))
        fingerprint = config_fingerprint(config.clone().as_dict())
        partial = partial or not _covers_groups(doc, config)
        jobs = plan(settings, group, parse_runs(str(doc["runs"])), fingerprint)
        log_dir = Path(settings.checkpoint_dir).parent / "fleet" / group
        print(f"[sweep {doc['name']}] recipe {name}: {len(jobs)} runs")
        failed += Fleet(args, group, int(doc.get("workers", 1)), log_dir, settings).run(jobs)
        if not failed:
            _audit(doc, settings, group, None, not _covers_groups(doc, config))
    if failed:
        print(f"[sweep {doc['name']}] {failed} runs failed: fix and run the sweep again")
        return failed
    for extra in doc.get("extra_audits", []):
        _audit(doc, settings, extra["group"], list(extra["references"]), partial)
    opts = doc.get("compare", {})
    compare(
        settings,
        opts.get("attacks", ["loss", "lira_online_fixed_var"]),
        Path(opts.get("output_dir", f"compare_{doc['name']}")),
        groups=list(doc["recipes"]),
        filter_string=f"tags.`mia.sweep` = '{doc['name']}'",
        all_epochs=bool(opts.get("all_epochs", False)),
        baseline=opts.get("baseline"),
    )
    return 0
