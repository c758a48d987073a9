"""``mia-bench compare``: recipes side by side, and attack success against the gap.

Reads the audit runs in the MLflow store (tag ``mia.audit_of``; the latest per audited
group and reference set), joins each audited target with its own run's accuracy and
generalization gap, and writes

* a recipe table (one row per audit: train/test accuracy, gap, and AUC and TPR at the
  chosen FPR, ``--fpr``, default 0.1%, per attack with the spread over targets) as
  markdown and CSV;
* scatters of that TPR against the train-test accuracy gap and the loss gap, one colour
  per recipe, one point per audited target (:mod:`mia_bench.study.compare_plots`).

:func:`open_study` (``notebooks/compare.ipynb``) finds the store without creating one and
says why there is nothing to compare yet (no store, experiment, runs or audits) and what to run.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from mia_bench.errors import UserError
from mia_bench.metrics import DEFAULT_FPRS
from mia_bench.store.database import SQLITE, find_store
from mia_bench.store.runs import MetricHistory, MlflowSettings, resolve_tracking_uri
from mia_bench.study.compare_leaks import write_comparisons
from mia_bench.study.compare_plots import scatter, scatters, tpr_key

__all__ = ["load_audits", "open_study", "points", "recipe_table", "scatter", "scatters", "tpr_key"]

RUN_METRICS = {
    "train_acc": "train/acc",
    "test_acc": "test/acc",
    "gap_acc": "gap/acc",
    "gap_loss": "gap/loss",
}
POINT_IDS = ("group", "references", "run_index", "run_id", "epoch")


def load_audits(
    client: MlflowClient,
    exp_ids: Sequence[str],
    groups: Sequence[str] | None = None,
    filter_string: str = "",
) -> list[dict]:
    """The latest audit document per (audited group, references), with its run id."""
    query = "tags.`mia.audit_of` != ''" + (f" and {filter_string}" if filter_string else "")
    runs = client.search_runs(
        list(exp_ids),
        filter_string=query,
        order_by=["attributes.start_time DESC"],
        max_results=10_000,
    )
    seen, audits = set(), []
    for run in runs:
        key = (run.data.tags["mia.audit_of"], run.data.tags.get("mia.references", ""))
        if key in seen or (groups and key[0] not in groups):
            continue
        seen.add(key)
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(run.info.run_id, "audit.json", tmp)
            doc = json.loads(Path(path).read_text())
        doc |= {"audit_run": run.info.run_id, "group": key[0], "references": key[1]}
        audits.append(doc)
    return audits


def points(client: MlflowClient, audits: Sequence[dict], all_epochs: bool = False) -> pd.DataFrame:
    """One row per audited model: its accuracy, gaps, and each attack's metrics.

    With ``all_epochs``, every recorded checkpoint of an ``--epoch all`` audit is a
    model of its own (one row per target and epoch), as for the gap study.
    """
    rows, history = [], MetricHistory(client)
    for doc in audits:
        views = doc.get("epochs", {}) if all_epochs and doc.get("epochs") else {"": doc}
        for view in views.values():
            for index, metrics in view.get("per_target", {}).items():
                run_id = view.get("target_runs", {}).get(index)
                if run_id is None:  # a checkpoint audit: no target run to read accuracy from
                    continue
                epoch = view.get("target_epochs", {}).get(index, view["epoch"])
                ids = (doc["group"], doc["references"], int(index), run_id, epoch)
                row = dict(zip(POINT_IDS, ids, strict=True))
                row |= {k: history.at(run_id, m, epoch) for k, m in RUN_METRICS.items()}
                rows.append(row | metrics)
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=[*POINT_IDS, *RUN_METRICS])


GMIA_PREDICTED = "gmia_direct/num_predicted"
GMIA_PRECISION = "gmia_direct/precision"
GMIA_HITS = "gmia_direct/hits"


def recipe_table(
    pts: pd.DataFrame, attacks: Sequence[str], fpr: float = DEFAULT_FPRS[0]
) -> pd.DataFrame:
    """One row per audit: means (and spreads) over its targets at the audited epoch.

    With ``gmia_direct`` among the attacks, GMIA's predictions on its vulnerable records
    are summed over the targets and its precision pooled (hits / predictions).
    """
    if "epoch" in pts:  # with all_epochs points, the table keeps each target's last epoch
        last = pts.groupby(["group", "references", "run_index"])["epoch"].transform("max")
        pts = pts[pts["epoch"] == last]
    cols = {k: ["mean"] for k in RUN_METRICS}  # lists: always (metric, statistic) columns
    for a in attacks:
        for key in (f"{a}/auc", tpr_key(a, fpr)):
            if key in pts:
                cols[key] = ["mean", "std"]
    gmia = "gmia_direct" in attacks and GMIA_PREDICTED in pts
    if gmia:  # GMIA is judged by precision on its few predictions, pooled over targets
        hits = pts[GMIA_PRECISION].fillna(0.0) * pts[GMIA_PREDICTED]
        pts = pts.assign(**{GMIA_HITS: hits})
        cols |= {GMIA_PREDICTED: "sum", GMIA_HITS: "sum"}
    table = pts.groupby(["group", "references"], sort=False).agg(cols)
    table.columns = [c if s in ("mean", "sum") else f"{c}_{s}" for c, s in table.columns]
    table["num_targets"] = pts.groupby(["group", "references"], sort=False).size()
    if gmia:
        predicted = table[GMIA_PREDICTED]
        table[GMIA_PRECISION] = (table.pop(GMIA_HITS) / predicted).where(predicted > 0)
    return table.reset_index()


def markdown(table: pd.DataFrame, attacks: Sequence[str], fpr: float = DEFAULT_FPRS[0]) -> str:
    """The recipe table as markdown: accuracies in percent, TPR in percent."""
    head = ["recipe", "references", "train acc", "test acc", "gap"]
    for a in attacks:
        head += [f"{a} AUC", f"{a} TPR@{100 * fpr:g}%"]
    gmia = GMIA_PREDICTED in table
    if gmia:
        head += ["GMIA predictions", "GMIA precision"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        cells = [
            r["group"],
            r["references"],
            f"{100 * r['train_acc']:.1f}",
            f"{100 * r['test_acc']:.1f}",
            f"{100 * r['gap_acc']:.1f}",
        ]
        for a in attacks:
            auc, tpr = f"{a}/auc", tpr_key(a, fpr)
            cells.append(f"{r[auc]:.3f} ± {r[auc + '_std']:.3f}" if auc in r else "-")
            cells.append(f"{100 * r[tpr]:.2f} ± {100 * r[tpr + '_std']:.2f}" if tpr in r else "-")
        if gmia:
            cells += [f"{r[GMIA_PREDICTED]:.0f}", f"{r[GMIA_PRECISION]:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


TRACKING_ENV = "MIA_TRACKING_URI"
QUICKSTART = "-c quickstart --group G --data.num_runs 8"
TRAIN = (
    f"train a group of runs of one recipe (`mia-bench fit {QUICKSTART} --data.run_index I` "
    f"for each I in 0..7, or all at once: `mia-bench fleet {QUICKSTART} --runs 0:8`)"
)


def audit_hint(groups: Sequence[str]) -> str:
    """The commands that audit ``groups`` (``G`` when none is known).

    >>> audit_hint(["a", "b"])
    '`mia-bench audit --group a`, `mia-bench audit --group b`'
    """
    return ", ".join(f"`mia-bench audit --group {g}`" for g in (groups or ["G"]))


@dataclass
class Study:
    """What :func:`open_study` found: the audits of a store, or why there are none.

    Attributes:
        message: one sentence: how many audits of which groups were read from which
            store, or why there is nothing to compare yet and the commands to run.
        audits: the latest audit document per (audited group, references).
        client: the store's client (None when no store was found).
        exp_ids: ids of the experiments read.
    """

    message: str
    audits: list[dict] = field(default_factory=list)
    client: MlflowClient | None = None
    exp_ids: list[str] = field(default_factory=list)


def open_study(
    tracking_uri: str | None = None,
    experiments: Sequence[str] = (MlflowSettings.experiment_name,),
    groups: Sequence[str] | None = None,
    filter_string: str = "",
    search_parents: bool = True,
) -> Study:
    """The audits of a store, found without creating a store.

    Args:
        tracking_uri: the store; None: ``$MIA_TRACKING_URI``, else
            ``sqlite:///mlruns/mlflow.db`` (see :func:`find_store` for relative paths).
        experiments: names of the experiments to read.
        groups: only the audits of these groups (None: every audited group).
        filter_string: an extra MLflow filter on the audit runs.
        search_parents: look for a relative SQLite path in the folders above too.

    Returns:
        The audits and a sentence saying what was read, or, with no audits, why (no
        store, no experiment, no runs, no audits yet) and which commands to run.
    """
    given = tracking_uri or os.environ.get(TRACKING_ENV) or MlflowSettings.tracking_uri
    uri = find_store(given, search_parents)
    if uri is None:
        return Study(_no_store(given, search_parents))
    client = MlflowClient(resolve_tracking_uri(uri))
    exp_ids = [e.experiment_id for n in experiments if (e := client.get_experiment_by_name(n))]
    audits = load_audits(client, exp_ids, groups, filter_string)
    where = f"experiment {', '.join(experiments)} of store {uri.partition('?')[0]}"
    if audits:
        audited = sorted({d["group"] for d in audits})
        many = "audit" if len(audits) == 1 else "audits"
        message = f"{len(audits)} {many} (groups {', '.join(audited)}) from {where}."
    else:
        message = _no_audits(client, exp_ids, where, groups)
    return Study(message, audits, client, exp_ids)


def _no_store(given: str, search_parents: bool) -> str:
    path = given[len(SQLITE) :].partition("?")[0] if given.startswith(SQLITE) else given
    above = " or any folder above it" if search_parents and not Path(path).is_absolute() else ""
    return (
        f"No MLflow store found: no {path} in {Path.cwd()}{above}. To compare recipes, "
        f"{TRAIN}, then audit it ({audit_hint([])}); or name your store "
        f"(${TRACKING_ENV}, the notebook's TRACKING_URI, --mlflow.tracking_uri), "
        "e.g. sqlite:////home/me/project/mlruns/mlflow.db."
    )


def _no_audits(
    client: MlflowClient, exp_ids: list[str], where: str, groups: Sequence[str] | None
) -> str:
    if not exp_ids:
        have = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
        return f"No {where} (experiments there: {have}): {TRAIN}, then {audit_hint([])}."
    query = "tags.`mia.group` != ''"
    runs = client.search_runs(exp_ids, filter_string=query, max_results=1000)
    trained = sorted({r.data.tags["mia.group"] for r in runs})
    if not trained:
        return f"No runs in {where} yet: {TRAIN}, then audit it ({audit_hint([])})."
    which = f" of groups {', '.join(groups)}" if groups else ""
    return (
        f"No audits{which} yet in {where}, which has runs of groups {', '.join(trained)}: "
        f"audit them with {audit_hint(list(groups or trained))}."
    )


def compare(
    settings: MlflowSettings,
    attacks: Sequence[str],
    output_dir: Path,
    groups: Sequence[str] | None = None,
    experiments: Sequence[str] | None = None,
    filter_string: str = "",
    log: bool = True,
    all_epochs: bool = False,
    fpr: float = DEFAULT_FPRS[0],
    baseline: str | None = None,
) -> pd.DataFrame:
    """Write ``compare.md``, ``compare.csv``, ``points.csv`` and the scatters; log them.

    ``all_epochs`` puts every audited checkpoint in the scatters and ``points.csv``;
    ``fpr`` is the FPR whose TPR is tabulated and plotted (one the audits reported).
    ``compare.md`` goes on with whether each recipe's TPR differs from the ``baseline``
    recipe's, and how many of the baseline's vulnerable records it still exposes
    (:mod:`mia_bench.study.compare_leaks`).
    """
    names = experiments or [settings.experiment_name]
    study = open_study(settings.tracking_uri, names, groups, filter_string, search_parents=False)
    if not study.audits:  # never a fresh, empty store in a wrong folder
        raise UserError(study.message)
    client, pts = study.client, points(study.client, study.audits, all_epochs)
    table = recipe_table(pts, attacks, fpr)
    output_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(output_dir / "compare.csv", index=False)
    pts.to_csv(output_dir / "points.csv", index=False)
    more = write_comparisons(client, study.audits, pts, attacks, fpr, output_dir, baseline)
    (output_dir / "compare.md").write_text(
        "\n".join(filter(None, [markdown(table, attacks, fpr), more]))
    )
    for name, fig in scatters(pts, attacks, fpr).items():
        fig.savefig(output_dir / name, dpi=120)
    if log:
        run = client.create_run(study.exp_ids[0], run_name="compare", tags={"mia.compare": "true"})
        client.log_artifacts(run.info.run_id, str(output_dir))
        client.set_terminated(run.info.run_id)
    return table
