"""Which layers the SignalRecorder records when ``--signals.layers`` is not given: the
ones the configured attacks and property inference use, so that no run stores
embeddings nothing reads (ResNet-18 on CIFAR-10: 123 MB per recorded epoch)."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from mia_bench.callbacks import AttackMonitor, PropertyMonitor, SignalRecorder
from mia_bench.callbacks.signal_recorder import layers_needed
from mia_bench.cli import main
from mia_bench.store.artifacts import load_signals, local_artifact_dir

TINY = [
    "--model.net.init_args.hidden=[32]",
    "--data.batch_size=256",
    "--signals.progress=false",
    "--trainer.enable_progress_bar=false",
    "--trainer.max_epochs=1",
]


@pytest.mark.parametrize(
    ("attacks", "properties", "layers"),
    [
        (["loss", "confidence"], [], ()),
        (["loss", "neighbourhood"], [], ("embedding",)),
        (["lira_online", "nn_embedding"], [], ("embedding",)),
        (["gmia_direct"], [], ("embedding",)),
        (["loss"], ["vehicle"], ("embedding",)),
    ],
)
def test_layers_are_those_an_attack_or_property_monitor_uses(attacks, properties, layers):
    monitors = [AttackMonitor(attacks=attacks), PropertyMonitor(names=properties)]
    assert layers_needed(monitors) == layers
    assert SignalRecorder().layers is None  # decided at setup, from the trainer's callbacks
    assert SignalRecorder(layers=["fc0"]).layers == ("fc0",)


def _artifacts(tmp):
    client = MlflowClient(f"sqlite:///{tmp}/mlruns/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("mia-bench").experiment_id])
    return client, run, local_artifact_dir(run.info.artifact_uri)


@pytest.mark.slow
def test_default_attacks_record_no_embeddings(in_tmp):
    assert main(["fit", *TINY, "--group=plain"]) == 0
    _, _, art = _artifacts(in_tmp)
    assert load_signals(art, 0).logits.shape == (1797, 1, 10)
    assert not (art / "embeddings").exists()


@pytest.mark.slow
def test_an_embedding_attack_records_the_embedding_layer_and_runs(in_tmp):
    assert main(["fit", *TINY, "--group=nb", "--attacks.attacks=[loss,neighbourhood]"]) == 0
    client, run, art = _artifacts(in_tmp)
    assert load_signals(art, 0, ["embedding"]).embeddings["embedding"].shape == (1797, 32)
    assert sorted(p.name for p in (art / "embeddings" / "epoch_000").iterdir()) == ["embedding.npy"]
    assert "mia/auc/neighbourhood" in run.data.metrics


@pytest.mark.slow
def test_explicit_layers_win(in_tmp):
    assert main(["fit", *TINY, "--group=fc0", "--signals.layers=[fc0]"]) == 0
    _, _, art = _artifacts(in_tmp)
    assert sorted(p.name for p in (art / "embeddings" / "epoch_000").iterdir()) == ["fc0.npy"]
