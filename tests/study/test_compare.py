"""mia-bench compare over two small audited groups; what it says of a store with no audits."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from mia_bench.cli import main
from mia_bench.store.database import open_store
from mia_bench.store.groups import client_and_experiment
from mia_bench.store.runs import MlflowSettings, experiment_id


@pytest.mark.slow
def test_compare_table_scatter_and_mlflow_run(audited_store, monkeypatch):
    monkeypatch.chdir(audited_store)
    main(["compare", "--attacks", "loss,lira_online", "--output_dir", "out"])
    table = pd.read_csv(audited_store / "out" / "compare.csv")
    assert sorted(table["group"]) == ["dropout", "plain"]
    assert (table["num_targets"] == 3).all()
    pts = pd.read_csv(audited_store / "out" / "points.csv")
    assert len(pts) == 6
    # the table's means are the means of the points it was built from
    for group, rows in pts.groupby("group"):
        row = table[table["group"] == group].iloc[0]
        assert row["gap_acc"] == pytest.approx(rows["gap_acc"].mean())
        assert row["lira_online/tpr_at_fpr_0.001"] == pytest.approx(
            rows["lira_online/tpr_at_fpr_0.001"].mean()
        )
    # each point's gap is the target run's own train - test accuracy
    doc = json.loads((audited_store / "plain.json").read_text())
    client, exp_id = client_and_experiment(MlflowSettings())
    some = pts[pts["group"] == "plain"].iloc[0]
    run = client.get_run(doc["target_runs"][str(some["run_index"])])
    assert some["gap_acc"] == pytest.approx(run.data.metrics["gap/acc"])
    for name in ("tpr_vs_gap_acc_loss.png", "tpr_vs_gap_loss_lira_online.png"):
        assert (audited_store / "out" / name).stat().st_size > 1000
    assert "| plain | plain |" in (audited_store / "out" / "compare.md").read_text()
    assert client.search_runs([exp_id], "tags.`mia.compare` = 'true'")


@pytest.mark.slow
def test_all_epochs_makes_every_audited_checkpoint_a_point(audited_store, monkeypatch):
    monkeypatch.chdir(audited_store)
    main(
        [
            "audit",
            "--group",
            "plain",
            "--epoch",
            "all",
            "--targets",
            "3",
            "--attacks",
            "loss,lira_online",
            "--output",
            "plain_all.json",
        ]
    )
    main(["compare", "--attacks", "loss", "--output_dir", "every", "--all_epochs"])
    pts = pd.read_csv(audited_store / "every" / "points.csv")
    plain = pts[pts["group"] == "plain"]
    assert sorted(plain["epoch"]) == [0, 0, 0, 1, 1, 1]
    assert len(pts[pts["group"] == "dropout"]) == 3
    table = pd.read_csv(audited_store / "every" / "compare.csv")
    assert (table["num_targets"] == 3).all()  # the table keeps the last epoch only
    client, _ = client_and_experiment(MlflowSettings())
    first = plain[plain["epoch"] == 0].iloc[0]
    history = client.get_metric_history(first["run_id"], "test/acc")
    assert first["test_acc"] == pytest.approx(next(m.value for m in history if m.step == 0))


def test_recipe_table_pools_gmia_precision_over_targets():
    from mia_bench.study.compare import markdown, recipe_table

    pts = pd.DataFrame(
        {
            "group": ["g", "g", "g"],
            "references": ["g", "g", "g"],
            "run_index": [0, 1, 2],
            "train_acc": [0.99, 0.98, 0.99],
            "test_acc": [0.96, 0.95, 0.96],
            "gap_acc": [0.03, 0.03, 0.03],
            "gap_loss": [0.1, 0.1, 0.1],
            "gmia_direct/auc": [0.56, 0.57, 0.55],
            "gmia_direct/tpr_at_fpr_0.001": [0.01, 0.0, 0.02],
            "gmia_direct/num_predicted": [3.0, 0.0, 1.0],
            "gmia_direct/precision": [2 / 3, float("nan"), 0.0],  # nothing predicted: NaN
        }
    )
    table = recipe_table(pts, ["gmia_direct"])
    assert table["gmia_direct/num_predicted"].tolist() == [4.0]
    assert table["gmia_direct/precision"].tolist() == pytest.approx([0.5])  # 2 hits / 4
    assert "| 4 | 0.500 |" in markdown(table, ["gmia_direct"])


def test_no_store_is_explained_and_never_created(in_tmp, monkeypatch):
    from mia_bench.study.compare import open_study, points, recipe_table, scatters

    (in_tmp / "notebooks").mkdir()
    monkeypatch.chdir(in_tmp / "notebooks")
    monkeypatch.delenv("MIA_TRACKING_URI", raising=False)
    study = open_study()
    assert study.message.startswith("No MLflow store found: no mlruns/mlflow.db in ")
    assert "or any folder above it" in study.message
    assert "mia-bench fit -c quickstart --group G" in study.message
    assert "`mia-bench audit --group G`" in study.message
    assert "$MIA_TRACKING_URI" in study.message
    pts = points(study.client, study.audits)
    assert recipe_table(pts, ["loss"]).empty and scatters(pts, ["loss"]) == {}
    assert list(in_tmp.rglob("*")) == [in_tmp / "notebooks"]  # no store made anywhere


def test_compare_refuses_a_missing_store_in_one_line(in_tmp, capsys):
    assert main(["compare", "--attacks", "loss"]) == 2
    error = capsys.readouterr().err
    assert "No MLflow store found: no mlruns/mlflow.db in" in error
    assert "folder above" not in error  # the CLI reads the store where fit writes it
    assert not (in_tmp / "mlruns").exists()


@pytest.fixture(scope="module")
def bare_store(tmp_path_factory) -> tuple[Path, MlflowClient]:
    """A store with the experiment ``mia-bench``, a run of group ``g`` and no audit."""
    folder = tmp_path_factory.mktemp("bare")
    client = MlflowClient(open_store(f"sqlite:///{folder}/mlruns/mlflow.db"))
    exp_id = experiment_id(client, MlflowSettings(artifact_location=str(folder / "art")))
    client.create_experiment("empty")
    client.create_run(exp_id, tags={"mia.group": "g", "mia.run_index": "0"})
    return folder, client


@pytest.mark.parametrize(
    ("experiment", "groups", "says"),
    [
        (
            "absent",
            None,
            "No experiment absent of {db} (experiments there: Default, empty, mia-bench): ",
        ),
        ("empty", None, "No runs in experiment empty of {db} yet: train a group of runs"),
        (
            "mia-bench",
            None,
            "No audits yet in experiment mia-bench of {db}, which has runs of "
            "groups g: audit them with `mia-bench audit --group g`.",
        ),
        ("mia-bench", ["h"], "No audits of groups h yet in "),
    ],
)
def test_an_empty_store_is_explained(bare_store, monkeypatch, experiment, groups, says):
    from mia_bench.study.compare import open_study

    folder, _ = bare_store
    (folder / "notebooks").mkdir(exist_ok=True)
    monkeypatch.chdir(folder / "notebooks")  # the store is found in the folder above
    monkeypatch.delenv("MIA_TRACKING_URI", raising=False)
    study = open_study(None, [experiment], groups)
    assert study.audits == [] and study.client is not None
    assert says.format(db=f"store sqlite:///{folder}/mlruns/mlflow.db") in study.message
    assert not (folder / "notebooks" / "mlruns").exists()


def test_the_store_comes_from_the_environment(bare_store, in_tmp, monkeypatch):
    from mia_bench.study.compare import open_study

    folder, _ = bare_store
    monkeypatch.setenv("MIA_TRACKING_URI", f"sqlite:///{folder}/mlruns/mlflow.db")
    assert "has runs of groups g" in open_study().message
    monkeypatch.setenv("MIA_TRACKING_URI", f"sqlite:///{in_tmp}/elsewhere.db")
    assert open_study().message.startswith(f"No MLflow store found: no {in_tmp}/elsewhere.db in")
    assert not (in_tmp / "elsewhere.db").exists()


def test_scatter_has_one_colour_and_legend_entry_per_recipe():
    from mia_bench.study.compare import scatter

    pts = pd.DataFrame(
        {
            "group": ["plain", "plain", "dropout", "dropout", "dropout"],
            "references": ["plain", "plain", "dropout", "dropout", "plain"],
            "gap_acc": [0.2, 0.3, 0.05, 0.06, 0.05],
            "loss/tpr_at_fpr_0.001": [0.02, 0.03, 0.001, 0.0, 0.002],
        }
    )
    ax = scatter(pts, "loss", "gap_acc").axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["dropout", "dropout (references: plain)", "plain"]
    colours = {tuple(c.get_facecolor()[0]) for c in ax.collections}
    assert len(ax.collections) == 3 and len(colours) == 3
    assert [len(c.get_offsets()) for c in ax.collections] == [2, 1, 2]


@pytest.mark.slow
def test_compare_tests_differences_and_counts_exposed_records(audited_store, monkeypatch):
    monkeypatch.chdir(audited_store)
    main(["compare", "--attacks", "loss,lira_online", "--output_dir", "diff",
          "--baseline", "plain"])  # fmt: skip
    out = audited_store / "diff"
    differences = pd.read_csv(out / "differences.csv")
    pts = pd.read_csv(out / "points.csv")
    for row in differences.itertuples():
        values = pts[pts["group"] == row.group][f"{row.attack}/tpr_at_fpr_0.001"]
        assert row.tpr == pytest.approx(values.mean())
        assert row.tpr_low <= row.tpr <= row.tpr_high and row.targets == 3
        if row.group == "plain":
            assert pd.isna(row.p_vs_baseline)
        else:  # Welch's test over the two recipes' targets
            from scipy.stats import ttest_ind

            base = pts[pts["group"] == "plain"][f"{row.attack}/tpr_at_fpr_0.001"]
            expected = ttest_ind(values, base, equal_var=False).pvalue
            assert row.p_vs_baseline == pytest.approx(expected, nan_ok=True)
    # the baseline exposes all its own vulnerable records; the same pool is compared
    plain = json.loads((audited_store / "plain.json").read_text())
    exposure = pd.read_csv(out / "exposure.csv").set_index("group")
    count = len(plain["leaks"]["vulnerable"])
    assert tuple(exposure.loc["plain", ["exposed", "compared"]]) == (count, count)
    assert exposure.loc["dropout", "compared"] == count
    assert 0 <= exposure.loc["dropout", "exposed"] <= count
    text = (out / "compare.md").read_text()
    assert "Is the difference real?" in text and "still exposed" in text


def test_an_unknown_baseline_is_one_line(audited_store, monkeypatch, capsys):
    monkeypatch.chdir(audited_store)
    assert main(["compare", "--output_dir", "x", "--baseline", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--baseline 'nope' has no audit here; audited: dropout, plain" in err
