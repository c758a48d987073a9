"""The gallery of leaking records: images as a captioned PNG grid, texts as snippets of
their raw text, tabular records against their class's mean; a pool that cannot be
loaded gives a one-line note instead of an exception."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import shared_file
from torch.utils.data import TensorDataset

from mia_bench.audit.gallery import (
    Gallery,
    caption,
    class_names,
    feature_summaries,
    gallery_for_config,
    pool_kind,
    record_cells,
    tile_figure,
    write_gallery,
)
from mia_bench.data import DatasetMembership, Digits, IMDb, Location, SyntheticImages
from mia_bench.data.membership import MembershipDataModule
from mia_bench.data.text import TextMembershipDataModule
from mia_bench.plots import plt

CONFIGS = Path(__file__).resolve().parents[2] / "lightning_configs"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def leaking(data: MembershipDataModule, index: list[int]) -> pd.DataFrame:
    """Records of pool ``index`` in that order, as an audit ranks them (best first)."""
    member = np.full(len(index), 4)
    flagged = np.maximum(4 - np.arange(len(index)) // 2, 0)
    return pd.DataFrame(
        {
            "index": index,
            "label": np.asarray(data.pool.labels)[index],
            "times_member": member,
            "times_flagged": flagged,
            "flag_rate": flagged / member,
            "mean_score": np.linspace(3.0, 1.0, len(index)),
        }
    )


def table_rows(markdown: str) -> list[list[str]]:
    """The data rows of the Markdown table, as lists of cells."""
    rows = [line for line in markdown.splitlines() if line.startswith("| #")]
    return [[c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows]


def gray_images() -> DatasetMembership:
    """12 grayscale 6x5 uint8 images ``[N, H, W]`` as a tensor pool, 3 classes."""
    images = torch.arange(12 * 6 * 5, dtype=torch.int64).remainder(256).to(torch.uint8)
    return DatasetMembership(TensorDataset(images.view(12, 6, 5), torch.arange(12) % 3))


class TinyTexts(TextMembershipDataModule):
    """Six generated texts of two classes, with html, pipes and one long text."""

    num_classes = 2
    TEXTS = [
        "the cat sat on the mat",
        "a <b>bold</b> claim & a | pipe",
        "dogs bark at night",
        "word " * 100,
        "the dog sat",
        "cats nap",
    ]

    def load_texts(self) -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
        return list(self.TEXTS), np.arange(len(self.TEXTS)) % 2, {}


class TextsWithoutRaw(TinyTexts):
    """A text pool whose module kept no raw texts: only its token ids are left."""

    def load_pool(self):
        pool = super().load_pool()
        self._texts = []
        return pool


@pytest.mark.parametrize(
    "make", [lambda: SyntheticImages(num_examples=30), gray_images], ids=["rgb", "gray"]
)
def test_image_gallery_writes_png_with_one_row_per_tile(tmp_path, make) -> None:
    data = make()
    index = [7, 2, 9, 0, 11, 5, 3]
    gallery = write_gallery(leaking(data, index), data, tmp_path, title="leaks")
    assert isinstance(gallery, Gallery) and gallery.kind == "image"
    assert gallery.files == ["gallery.png", "gallery.md", "gallery.html"]
    assert (tmp_path / "gallery.png").read_bytes().startswith(PNG_SIGNATURE)
    rows = table_rows(gallery.markdown)
    assert [r[0] for r in rows] == [f"#{n}" for n in index]
    assert rows[1][:3] == ["#2", str(int(data.pool.labels[2])), "4/4"]
    assert "![gallery](gallery.png)" in gallery.markdown
    assert (tmp_path / "gallery.md").read_text() == gallery.markdown
    assert not list(tmp_path.glob(".*.tmp"))


def test_tiles_show_the_pool_images_with_their_captions() -> None:
    data = SyntheticImages(num_examples=20)
    records = leaking(data, [4, 13, 8])
    captions = [caption(record_cells(row, None)) for _, row in records.iterrows()]
    assert captions[1].startswith(f"#13 · class {data.pool.labels[13]}\n")
    assert "flagged 4/4 · score 2" in captions[1]
    images = data.pool.inputs[[4, 13, 8]]
    fig = tile_figure(images, captions)
    try:
        tiles = [ax for ax in fig.axes if ax.images]
        assert [ax.get_title() for ax in tiles] == captions
        for ax, image in zip(tiles, images, strict=True):
            np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), image)
    finally:
        plt.close(fig)


def test_image_html_embeds_the_png_as_a_data_uri(tmp_path) -> None:
    data = SyntheticImages(num_examples=10)
    gallery = write_gallery(leaking(data, [1, 2, 3]), data, tmp_path, title="a <title>")
    found = re.search(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', gallery.html)
    assert found, gallery.html[:200]
    assert base64.b64decode(found.group(1)) == (tmp_path / "gallery.png").read_bytes()
    assert "<html" not in gallery.html and "<body" not in gallery.html
    assert "<h3>a &lt;title&gt;</h3>" in gallery.html
    assert (tmp_path / "gallery.html").read_text() == gallery.html


def features_with_outlier() -> DatasetMembership:
    """40 records of 10 small features in 2 classes; record 6 has feature 7 far away."""
    features = np.random.default_rng(0).random((40, 10), dtype=np.float32) * 0.1
    features[6, 7] = 50.0
    return DatasetMembership(TensorDataset(torch.from_numpy(features), torch.arange(40) % 2))


def test_tabular_names_the_feature_most_unlike_the_class_first(tmp_path) -> None:
    data = features_with_outlier()
    gallery = write_gallery(leaking(data, [6, 3, 10]), data, tmp_path)
    assert gallery.kind == "tabular"
    assert gallery.files == ["gallery.md", "gallery.html"]
    outlier, typical, _ = feature_summaries(data.pool, np.array([6, 3, 10]))
    assert outlier.features[0][:2] == (7, 50.0)
    assert outlier.outlier > 10 > typical.outlier
    row = table_rows(gallery.markdown)[0]
    assert row[-2].startswith("f7=50 (class 2.5")  # the class mean: 50 / 20 records + noise
    assert "f7=50" in gallery.html


def test_tabular_counts_nonzero_features_of_digits(tmp_path) -> None:
    data = Digits()
    pixels = data.pool.inputs
    gallery = write_gallery(leaking(data, [0, 5]), data, tmp_path)
    rows = table_rows(gallery.markdown)
    assert rows[0][1] == "0" and rows[1][1] == str(int(data.pool.labels[5]))
    assert [r[5] for r in rows] == [str(np.count_nonzero(pixels[n])) for n in (0, 5)]
    assert class_names(data) is None  # digits carry no names: labels stay numbers


def test_text_gallery_shows_the_raw_text_escaped(tmp_path) -> None:
    data = TinyTexts(tokenizer="word", vocab_size=50, max_length=8)
    gallery = write_gallery(leaking(data, [1, 0, 3]), data, tmp_path)
    assert gallery.kind == "text" and gallery.files == ["gallery.md", "gallery.html"]
    rows = table_rows(gallery.markdown)
    assert rows[0][-1] == r"a <b>bold</b> claim & a \| pipe"
    assert rows[1][-1] == "the cat sat on the mat"
    assert html.escape("a <b>bold</b> claim & a | pipe") in gallery.html
    assert "<b>bold" not in gallery.html
    long = rows[2][-1]
    assert len(long) == 200 and long.endswith("…") and long.startswith("word word")


def test_text_without_raw_texts_is_decoded_from_its_token_ids(tmp_path) -> None:
    data = TextsWithoutRaw(tokenizer="word", vocab_size=50, max_length=8)
    gallery = write_gallery(leaking(data, [0]), data, tmp_path)
    assert table_rows(gallery.markdown)[0][-1] == "the cat sat on the mat"


def test_pool_kind_and_class_names() -> None:
    assert pool_kind(np.zeros((3, 4, 4), np.uint8)) == "image"
    assert pool_kind(np.zeros((3, 4, 4, 3), np.float32)) == "tabular"
    assert pool_kind(np.zeros((3, 8), np.int64)) == "tabular"
    assert pool_kind(np.zeros((3, 8), np.int64), TinyTexts(max_length=8)) == "text"
    assert class_names(IMDb(root="absent")) == ("negative", "positive")  # pool not loaded


def test_records_of_another_pool_are_refused(tmp_path) -> None:
    data = Digits()
    records = leaking(data, [0, 1])
    records.loc[1, "label"] = (records.loc[1, "label"] + 1) % 10
    with pytest.raises(ValueError, match="another pool"):
        write_gallery(records, data, tmp_path)
    with pytest.raises(ValueError, match="outside the pool"):
        write_gallery(leaking(data, [0]).assign(index=[5000]), data, tmp_path)
    assert not tmp_path.joinpath("gallery.md").exists()


def test_gallery_for_config_without_its_data_says_why_in_one_line(tmp_path) -> None:
    absent = tmp_path / "absent"
    records = pd.DataFrame(
        {"index": [0], "label": [3], "times_member": [2], "times_flagged": [2]}
    ).assign(flag_rate=1.0, mean_score=0.5)
    note = gallery_for_config(
        records,
        CONFIGS / "cifar10_partial_cnn.yaml",
        tmp_path / "out",
        overrides=[f"--data.root={absent}"],
    )
    assert isinstance(note, str) and "\n" not in note
    assert note.startswith("no gallery: the pool of ")
    assert f"FileNotFoundError: dataset file not found: {absent}" in note
    assert not (tmp_path / "out").exists()


def test_gallery_for_config_that_does_not_parse_says_so(tmp_path, capsys) -> None:
    records = leaking(Digits(), [0])
    note = gallery_for_config(
        records, CONFIGS / "quickstart.yaml", tmp_path, overrides=["--data.no_such_arg=1"]
    )
    assert isinstance(note, str) and "\n" not in note
    assert "(the config does not parse: its error is printed above)" in note
    assert "no_such_arg" in capsys.readouterr().err


def test_records_never_members_show_no_rate() -> None:
    row = pd.Series(
        {"index": 3, "label": 1, "times_member": 0, "times_flagged": 0}
        | {"flag_rate": np.nan, "mean_score": np.nan}
    )
    cells = record_cells(row, ("negative", "positive"))
    assert cells == {
        "index": "#3",
        "label": "positive (1)",
        "flagged": "0/0",
        "flag rate": "-",
        "mean score": "-",
    }


def test_gallery_for_config_shows_the_digits_of_quickstart(tmp_path) -> None:
    records = leaking(Digits(), [10, 20])
    gallery = gallery_for_config(records, CONFIGS / "quickstart.yaml", tmp_path, title="digits")
    assert isinstance(gallery, Gallery) and gallery.kind == "tabular"
    assert [r[0] for r in table_rows(gallery.markdown)] == ["#10", "#20"]
    wrong = records.assign(label=(records["label"] + 1) % 10)
    note = gallery_for_config(wrong, CONFIGS / "quickstart.yaml", tmp_path)
    assert isinstance(note, str) and note.startswith("no gallery: record 10 has label")


def test_location_records_count_their_binary_features(tmp_path) -> None:
    root = shared_file("location/dataset_location.tgz").parent
    data = Location(root=str(root))
    gallery = gallery_for_config(
        leaking(data, [0, 100]),
        CONFIGS / "location_mlp.yaml",
        tmp_path,
        overrides=[f"--data.root={root}"],
    )
    assert isinstance(gallery, Gallery), gallery
    rows = table_rows(gallery.markdown)
    features = data.pool.inputs
    assert [r[5] for r in rows] == [str(int(features[n].sum())) for n in (0, 100)]
    assert all(re.match(r"f\d+=[01] \(class ", r[6]) for r in rows)
