"""Property inference: per-layer attack models on constructed embeddings, and the callback."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from mia_bench.audit.property_report import property_markdown, property_table
from mia_bench.callbacks import PropertyMonitor
from mia_bench.cli import main
from mia_bench.property_inference import infer_property, layer_property_inference, ovr_auc
from mia_bench.store.artifacts import local_artifact_dir


def _layers(n: int = 1200, seed: int = 0):
    """A property, a layer that encodes it linearly, and a layer of pure noise."""
    rng = np.random.default_rng(seed)
    prop = rng.integers(0, 2, n)
    informative = rng.normal(size=(n, 8))
    informative[:, 0] += 3.0 * prop  # the property shifts one unit
    noise = rng.normal(size=(n, 8))
    keep = np.zeros(n, dtype=bool)
    keep[rng.permutation(n)[: n // 2]] = True
    return prop, {"shallow": informative, "deep": noise}, keep


def test_informative_layer_leaks_and_noise_layer_does_not():
    prop, embeddings, keep = _layers()
    results = layer_property_inference(embeddings, {"p": prop}, keep, ["shallow", "deep"])
    shallow, deep = results["p"]["shallow"], results["p"]["deep"]
    assert shallow.auc > 0.95 and shallow.acc > 0.85
    assert 0.4 < deep.auc < 0.6 and deep.balanced_acc < 0.6
    # trained on the non-members, evaluated on the members
    assert shallow.num_aux == (~keep).sum() and shallow.num_eval == keep.sum()
    members = prop[keep]
    assert shallow.majority_acc == pytest.approx(max(members.mean(), 1 - members.mean()))


def test_metrics_match_sklearn_on_the_same_predictions():
    prop, embeddings, keep = _layers(seed=3)
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = embeddings["shallow"]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(x[~keep], prop[~keep])
    p = model.predict_proba(x[keep])[:, 1]
    got = infer_property(x, prop, ~keep, keep)
    assert got.auc == pytest.approx(roc_auc_score(prop[keep], p), abs=1e-12)
    pred = (p >= 0.5).astype(int)
    assert got.balanced_acc == pytest.approx(balanced_accuracy_score(prop[keep], pred), abs=1e-3)


def test_ovr_auc_matches_sklearn_macro():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4), size=300)
    y = rng.integers(0, 4, 300)
    expected = roc_auc_score(y, probs, multi_class="ovr", average="macro")
    assert ovr_auc(probs, y, np.arange(4)) == pytest.approx(expected, abs=1e-12)


def test_multiclass_property_and_pca_on_wide_layers():
    rng = np.random.default_rng(2)
    n = 900
    prop = rng.integers(0, 3, n)
    wide = rng.normal(size=(n, 400))
    wide[:, :3] += 4.0 * np.eye(3)[prop]  # one-hot signal in 3 of 400 units
    keep = rng.random(n) < 0.5
    result = infer_property(wide, prop, ~keep, keep, max_dim=32)
    assert result.auc > 0.9 and result.balanced_acc > 0.7


def test_bad_inputs_are_refused():
    prop, embeddings, keep = _layers(n=200)
    with pytest.raises(ValueError, match="overlap"):
        infer_property(embeddings["deep"], prop, keep, keep)
    with pytest.raises(ValueError, match="one property value"):
        infer_property(embeddings["deep"], np.zeros(200, dtype=int), ~keep, keep)
    with pytest.raises(ValueError, match="model must be"):
        infer_property(embeddings["deep"], prop, ~keep, keep, model="forest")


@pytest.mark.slow
def test_fit_logs_property_inference_per_layer(in_tmp):
    main(
        [
            "fit",
            "--model.net.init_args.hidden=[32,16]",
            "--trainer.max_epochs=2",
            "--trainer.enable_progress_bar=false",
            "--signals.progress=false",
            "--signals.layers=[fc0,embedding]",
            "--data.property_classes={small: [0, 1, 2, 3]}",
            "--properties.names=[small]",
        ]
    )
    client = MlflowClient(f"sqlite:///{in_tmp}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("mia-bench")
    (run,) = client.search_runs([exp.experiment_id])
    for layer in ("fc0", "embedding"):
        history = client.get_metric_history(run.info.run_id, f"property/small/{layer}/auc")
        assert sorted(m.step for m in history) == [0, 1]
        # the digits "small" property (0-3) is far easier than chance from a digit classifier
        assert run.data.metrics[f"property/small/{layer}/auc"] > 0.8
    art = local_artifact_dir(run.info.artifact_uri)
    assert (art / "property" / "epoch_001.png").stat().st_size > 1000


def test_monitor_refuses_unknown_properties_and_the_training_labels():
    labels = np.array([0, 1, 1, 0])
    datamodule = SimpleNamespace(
        pool=SimpleNamespace(labels=labels),
        properties=lambda: {"label_copy": labels.copy(), "other": np.array([1, 1, 0, 0])},
    )
    trainer = SimpleNamespace(datamodule=datamodule)
    assert list(PropertyMonitor(["other"])._properties(trainer)) == ["other"]
    with pytest.raises(ValueError, match="equal the training labels"):
        PropertyMonitor(["all"])._properties(trainer)
    with pytest.raises(ValueError, match=r"unknown properties \['nope'\].*offers \['label_copy'"):
        PropertyMonitor(["nope"])._properties(trainer)


def test_property_table_averages_runs_per_layer_and_epoch():
    logged = {
        ("a", "property/p/fc0/auc", 1): 0.6,
        ("b", "property/p/fc0/auc", 1): 0.8,
        ("a", "property/p/embedding/auc", 1): 0.5,  # run b lacks it
    }
    history = SimpleNamespace(at=lambda run, key, step: logged.get((run, key, step), np.nan))
    runs = [SimpleNamespace(run_id="a"), SimpleNamespace(run_id="b")]
    table = property_table(history, runs, "p", ["fc0", "embedding"], [1])
    assert table["mean"].tolist() == pytest.approx([0.7, 0.5])
    assert table["num_runs"].tolist() == [2, 1]
    assert "| 0 | fc0 | 0.700 ± 0.100 |" in property_markdown(table)
