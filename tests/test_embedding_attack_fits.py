"""The Embedding Attack Project's targets through the real CLI, on small generated data
of each real format.

Every pair trains with `mia-bench fit -c lightning_configs/<pair>.yaml`, records its
configured layers and is attacked per epoch; the text pairs carry token ids through the
same `(x, y, index)` batches as images.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from mia_bench.cli import main
from mia_bench.data.celeba import CELEBA_ATTRIBUTES
from mia_bench.store.artifacts import list_epochs, load_signals, local_artifact_dir

CONFIGS = Path(__file__).resolve().parents[1] / "lightning_configs"
QUIET = ["--trainer.enable_progress_bar=false", "--signals.progress=false"]
WORDS = {0: "grim dull awful bad", 1: "great superb fine good", 2: "match goal team win"}


def _text(rng: np.random.Generator, label: int) -> str:
    words = WORDS[label].split() + "the a movie story news of and".split()
    return " ".join(rng.choice(words, size=12))


def _fit(config: str, *extra: str) -> tuple[MlflowClient, object]:
    main(["fit", "-c", str(CONFIGS / config), *QUIET, *extra])
    client = MlflowClient(f"sqlite:///{Path.cwd()}/mlruns/mlflow.db")  # absolute: one db per test
    exp = client.get_experiment_by_name("mia-bench")
    (run,) = client.search_runs([exp.experiment_id])
    return client, run


def _steps(client: MlflowClient, run, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run.info.run_id, key))


def _check_layers(run, epoch: int, layers: list[str], num_examples: int) -> None:
    art = local_artifact_dir(run.info.artifact_uri)
    assert list_epochs(art)[-1] == epoch
    signals = load_signals(art, epoch, layers=layers)
    for layer in layers:
        features = signals.embeddings[layer]
        assert features.ndim == 2 and features.shape[0] == num_examples, layer
        assert np.isfinite(features).all(), layer


@pytest.mark.slow
def test_agnews_transformer(in_tmp):
    rng = np.random.default_rng(0)
    rows = [(str(c % 4 + 1), f"title {c}", _text(rng, c % 3)) for c in range(120)]
    with gzip.open(in_tmp / "test.csv.gz", "wt", encoding="utf-8", newline="") as f:
        csv.writer(f, quoting=csv.QUOTE_ALL).writerows(rows)
    client, run = _fit(
        "agnews_transformer.yaml",
        f"--data.root={in_tmp}",
        "--data.vocab_size=100",
        "--model.net.init_args.vocab_size=100",
        "--data.max_length=16",
        "--trainer.max_epochs=2",
    )
    assert _steps(client, run, "mia/auc/loss") == [0, 1]
    assert _steps(client, run, "test/acc") == [0, 1]
    _check_layers(run, 1, ["token_embed", "layers.0", "layers.1", "embedding"], 120)


def _write_imdb(root: Path, n: int = 80) -> None:
    rng = np.random.default_rng(1)
    with gzip.open(root / "imdb.csv.gz", "wt", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["review", "sentiment", "split", "id", "rating"])
        for i in range(n):
            positive = i % 2
            rating = [1, 2, 3, 4][i % 4] if not positive else [7, 8, 9, 10][i % 4]
            sentiment = "positive" if positive else "negative"
            writer.writerow([_text(rng, positive), sentiment, "train", i, rating])


@pytest.mark.slow
def test_imdb_bert_from_scratch_with_property_inference(in_tmp):
    _write_imdb(in_tmp)
    layers = ["bert.embeddings", "bert.encoder.layer.0", "bert.encoder.layer.1", "embedding"]
    client, run = _fit(
        "imdb_bert.yaml",
        f"--data.root={in_tmp}",
        "--data.tokenizer=word",
        "--data.vocab_size=100",
        "--data.max_examples=null",
        "--data.max_length=16",
        "--model.net.init_args.pretrained=null",
        "--model.net.init_args.vocab_size=100",
        "--model.net.init_args.hidden_size=32",
        "--model.net.init_args.num_layers=2",
        "--trainer.max_epochs=1",
        f"--signals.layers=[{','.join(layers)}]",
    )
    for layer in layers:
        assert _steps(client, run, f"property/extreme_rating/{layer}/auc") == [0], layer
    _check_layers(run, 0, layers, 80)


@pytest.mark.slow
def test_snacks_vit(in_tmp):
    rng = np.random.default_rng(2)
    for split in ("train", "val", "test"):
        for k, name in enumerate(["apple", "banana", "cake"]):
            (in_tmp / split / name).mkdir(parents=True)
            for i in range(4):
                pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) // (k + 1)
                Image.fromarray(pixels.astype(np.uint8)).save(in_tmp / split / name / f"{i}.jpg")
    layers = ["patch_embed", "blocks.0", "blocks.1", "embedding"]
    client, run = _fit(
        "snacks_vit.yaml",
        f"--data.root={in_tmp}",
        "--data.image_size=32",
        "--model.net.init_args.dim=32",
        "--model.net.init_args.depth=2",
        "--model.net.init_args.heads=2",
        "--trainer.max_epochs=1",
        f"--signals.layers=[{','.join(layers)}]",
    )
    assert _steps(client, run, "mia/auc/loss") == [0]
    _check_layers(run, 0, layers, 36)


@pytest.mark.slow
def test_celeba_cnn_infers_other_attributes(in_tmp):
    rng = np.random.default_rng(3)
    folder = in_tmp / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    names = [f"{n + 1:06d}.jpg" for n in range(48)]
    attributes = rng.random((48, 40)) < 0.5  # [48, 40]
    lines = [str(len(names)), " ".join(CELEBA_ATTRIBUTES)]
    for name, values in zip(names, attributes, strict=True):
        pixels = rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "img_align_celeba" / name)
        lines.append(name + " " + " ".join(" 1" if v else "-1" for v in values))
    (folder / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    client, run = _fit(
        "celeba_cnn.yaml",
        f"--data.root={in_tmp}",
        "--data.max_examples=null",
        "--trainer.max_epochs=1",
    )
    for prop in ("Male", "Young", "Eyeglasses"):
        for layer in ("conv1", "conv3", "embedding"):
            assert _steps(client, run, f"property/{prop}/{layer}/auc") == [0], (prop, layer)
    _check_layers(run, 0, ["conv1", "conv2", "conv3", "embedding"], 48)
