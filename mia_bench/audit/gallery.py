"""The records that leak, shown: a gallery of the pool records an audit flags most.

An audit ranks pool records by how often an attack flags them when they are members
(``records``: ``index``, ``label``, ``times_member``, ``times_flagged``, ``flag_rate``,
``mean_score``, best first). :func:`write_gallery` shows the first of them as the pool
holds them, in the form :func:`pool_kind` chooses:

* ``image`` (uint8 ``[N, H, W, C]`` or ``[N, H, W]``): ``gallery.png``, a grid of the
  images, each captioned with its pool index, class, flag rate and mean score;
* ``text`` (a :class:`~mia_bench.data.text.TextMembershipDataModule`): the first
  :data:`SNIPPET_CHARS` characters of each record's raw text;
* ``tabular`` (anything else; ``[N, ...]`` inputs are read as ``[N, D]`` features): each
  record's nonzero features, the features where it differs most from its class's mean,
  and its outlier score (distance to the class mean over the class's median distance).

Every kind is written as ``gallery.md`` and ``gallery.html``, an HTML fragment to embed
in a report (an image gallery's ``<img>`` holds the PNG as a data URI, so the fragment
stands alone). Files are written atomically (:func:`~mia_bench.store.artifacts.atomic_write`).
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mia_bench.data.ag_news import CLASSES as AG_NEWS_CLASSES
from mia_bench.data.ag_news import AGNews
from mia_bench.data.imdb import SENTIMENTS, IMDb
from mia_bench.data.membership import MembershipDataModule, Pool
from mia_bench.data.snacks import SNACKS_CLASSES, Snacks
from mia_bench.data.text import PAD_ID, TextMembershipDataModule, WordTokenizer, clean_text
from mia_bench.plots import plt, save_figure
from mia_bench.store.artifacts import atomic_write

IMAGE, TEXT, TABULAR = "image", "text", "tabular"
RECORD_COLUMNS = ("index", "label", "times_member", "times_flagged", "flag_rate", "mean_score")
SNIPPET_CHARS = 200  # characters of a text record shown
TOP_FEATURES = 3  # features shown per tabular record
TILE_COLUMNS = 6  # images per row of the grid
# class names the project's data sets define (their modules carry no attribute)
KNOWN_CLASS_NAMES: tuple[tuple[type, tuple[str, ...]], ...] = (
    (Snacks, SNACKS_CLASSES),
    (AGNews, AG_NEWS_CLASSES),
    (IMDb, SENTIMENTS),
)


@dataclass(frozen=True)
class Gallery:
    """A gallery written into a folder.

    Attributes:
        kind: ``"image"``, ``"text"`` or ``"tabular"``.
        files: names of the files written into the folder, e.g. ``["gallery.png",
            "gallery.md", "gallery.html"]``.
        markdown: the Markdown rendering (an image gallery's links ``gallery.png``).
        html: an HTML fragment (no ``<html>``/``<body>``), self-contained.
    """

    kind: str
    files: list[str]
    markdown: str
    html: str


@dataclass(frozen=True)
class FeatureSummary:
    """How one tabular record stands in its class.

    Attributes:
        nonzero: how many of its features are nonzero.
        features: ``(feature, value, class mean)`` of the features where it differs most
            from its class's mean, most different first.
        outlier: its distance to the class mean over the class's median distance
            (1: typical; 0 when the whole class is one point and it is that point).
    """

    nonzero: int
    features: list[tuple[int, float, float]]
    outlier: float


def rows_of(inputs: Any, index: np.ndarray) -> np.ndarray:
    """Rows ``index`` of a pool's inputs (array, tensor or dataset inputs) as one array.

    >>> rows_of(torch.arange(6).view(3, 2), np.array([2, 0])).tolist()
    [[4, 5], [0, 1]]
    """
    if isinstance(inputs, torch.Tensor):
        return inputs[torch.tensor(np.asarray(index), dtype=torch.long)].cpu().numpy()
    if isinstance(inputs, np.ndarray):
        return inputs[index]
    return np.stack([np.asarray(inputs[int(n)]) for n in index])


def pool_kind(inputs: Any, data_module: MembershipDataModule | None = None) -> str:
    """How a pool is shown: ``"image"``, ``"text"`` or ``"tabular"``.

    ``"text"`` for the token ids of a text data module (so only when ``data_module`` is
    given: integer features alone read as tabular), ``"image"`` for uint8 inputs
    ``[N, H, W]`` or ``[N, H, W, C]``, else ``"tabular"``.

    >>> pool_kind(np.zeros((2, 4, 4, 3), np.uint8)), pool_kind(np.zeros((2, 64), np.float32))
    ('image', 'tabular')
    """
    if isinstance(data_module, TextMembershipDataModule):
        return TEXT
    sample = rows_of(inputs, np.arange(1))
    return IMAGE if sample.dtype == np.uint8 and sample.ndim in (3, 4) else TABULAR


def class_names(data_module: MembershipDataModule) -> tuple[str, ...] | None:
    """The names of the data module's classes (label ``k`` is name ``k``), or None.

    A ``class_names`` or ``classes`` attribute of strings where the module has one, else
    the names the project's data sets define (Snacks, AG News, IMDb's sentiments).
    """
    for attribute in ("class_names", "classes"):
        names = getattr(data_module, attribute, None)
        if isinstance(names, list | tuple) and names and all(isinstance(n, str) for n in names):
            return tuple(names)
    for cls, names in KNOWN_CLASS_NAMES:
        if isinstance(data_module, cls):
            return names
    return None


def label_text(label: int, names: Sequence[str] | None) -> str:
    """``"name (label)"`` where the class has a name, else the label.

    >>> label_text(1, ("negative", "positive")), label_text(3, None)
    ('positive (1)', '3')
    """
    return f"{names[label]} ({label})" if names and 0 <= label < len(names) else str(label)


def record_cells(row: pd.Series, names: Sequence[str] | None) -> dict[str, str]:
    """A record's index, class, flag count and rate, and mean score, as table cells."""
    return {
        "index": f"#{int(row['index'])}",
        "label": label_text(int(row["label"]), names),
        "flagged": f"{int(row['times_flagged'])}/{int(row['times_member'])}",
        "flag rate": number_text(row["flag_rate"], ".0%"),
        "mean score": number_text(row["mean_score"], ".3g"),
    }


def number_text(value: float, spec: str) -> str:
    """``value`` formatted by ``spec``, or ``"-"`` where it is NaN (never a member).

    >>> number_text(0.5, ".0%"), number_text(float("nan"), ".0%")
    ('50%', '-')
    """
    return "-" if math.isnan(float(value)) else format(float(value), spec)


def caption(cells: dict[str, str]) -> str:
    """An image tile's caption from :func:`record_cells`.

    >>> print(caption({"index": "#7", "label": "3", "flagged": "4/4", "mean score": "2.5"}))
    #7 · class 3
    flagged 4/4 · score 2.5
    """
    return (
        f"{cells['index']} · class {cells['label']}\n"
        f"flagged {cells['flagged']} · score {cells['mean score']}"
    )


def markdown_table(rows: Sequence[dict[str, str]]) -> str:
    """Rows of cells (the same keys, in order) as a Markdown table; pipes are escaped.

    >>> print(markdown_table([{"a": "x|y", "b": "1"}]), end="")
    | a | b |
    |---|---|
    | x\\|y | 1 |
    """
    if not rows:
        return "No records to show.\n"

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    head = list(rows[0])
    lines = [line(head), "|" + "---|" * len(head), *(line(list(r.values())) for r in rows)]
    return "\n".join(lines) + "\n"


def html_table(rows: Sequence[dict[str, str]]) -> str:
    """Rows of cells as an HTML ``<table>``, every cell escaped.

    >>> html_table([{"a": "<b>"}])
    '<table>\\n<tr><th>a</th></tr>\\n<tr><td>&lt;b&gt;</td></tr>\\n</table>\\n'
    """
    if not rows:
        return "<p>No records to show.</p>\n"

    def line(tag: str, cells: Sequence[str]) -> str:
        return "<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>"

    body = [line("td", list(row.values())) for row in rows]
    return "\n".join(["<table>", line("th", list(rows[0])), *body, "</table>"]) + "\n"


def records_mismatch(records: pd.DataFrame, pool: Pool) -> str | None:
    """Why ``records`` are not of ``pool`` (an index outside it, a label that differs),
    or None when they are."""
    missing = [c for c in RECORD_COLUMNS if c not in records.columns]
    if missing:
        return f"records lack the columns {missing} (expected {list(RECORD_COLUMNS)})"
    index = records["index"].to_numpy(np.int64)
    n = len(pool.labels)
    outside = index[(index < 0) | (index >= n)]
    if outside.size:
        return f"records name pool indices {outside[:5].tolist()} outside the pool [0, {n})"
    labels = np.asarray(pool.labels)[index]
    differ = np.flatnonzero(labels != records["label"].to_numpy(np.int64))
    if differ.size:
        k = differ[0]
        return (
            f"record {index[k]} has label {records['label'].iloc[k]} but the pool's is "
            f"{labels[k]}: the records are of another pool (data config or subset)"
        )
    return None


# --- images ------------------------------------------------------------------------
def tile_figure(images: np.ndarray, captions: Sequence[str], title: str = "") -> plt.Figure:
    """uint8 images ``[n, H, W]`` or ``[n, H, W, C]`` in a grid, each titled by its caption."""
    cols = max(1, min(TILE_COLUMNS, len(images)))
    rows = -(-len(images) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.1 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, text in zip(axes.flat[: len(images)], images, captions, strict=True):
        gray = image.ndim == 2 or image.shape[-1] == 1
        shown = image.reshape(image.shape[:2]) if gray else image
        ax.imshow(shown, cmap="gray" if gray else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(text, fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def png_data_uri(path: Path) -> str:
    """The PNG file at ``path`` as a ``data:image/png;base64,...`` URI."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _image_body(
    shown: pd.DataFrame, data: MembershipDataModule, folder: Path, title: str
) -> tuple[list[str], str, str]:
    rows = _cells(shown, data)
    if not rows:
        return [], markdown_table(rows), html_table(rows)
    images = rows_of(data.pool.inputs, shown["index"].to_numpy(np.int64))
    png = save_figure(
        tile_figure(images, [caption(r) for r in rows], title), folder / "gallery.png"
    )
    img = f'<img src="{png_data_uri(png)}" alt="{html.escape(title or "gallery")}">\n'
    return [png.name], markdown_table(rows) + f"\n![gallery]({png.name})\n", img + html_table(rows)


# --- texts -------------------------------------------------------------------------
def token_decoder(tokenizer: Any) -> Callable[[np.ndarray], str]:
    """Token ids ``[L]`` -> text with the pool's tokenizer (words of a
    :class:`WordTokenizer` joined by spaces, unknown ones as ``<unk>``; padding dropped)."""
    if not isinstance(tokenizer, WordTokenizer):
        return lambda ids: tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)
    words = {i: w for w, i in tokenizer.vocab.items()}
    return lambda ids: " ".join(words.get(int(i), "<unk>") for i in ids if i != PAD_ID)


def record_texts(data: TextMembershipDataModule, index: np.ndarray) -> list[str]:
    """The texts of pool records ``index``: the module's raw texts (kept in pool order),
    or, where it kept none, their token ids decoded (truncated to ``max_length``)."""
    texts = data.texts
    if len(texts) == data.num_examples:
        return [texts[int(n)] for n in index]
    decode = token_decoder(data.tokenizer)
    return [decode(ids) for ids in rows_of(data.pool.inputs, index)]


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """The first ``limit`` characters of ``text``, its whitespace and html breaks folded.

    >>> snippet("Good.<br /><br />Very\\n good film", limit=12)
    'Good. Very g…'
    """
    folded = " ".join(clean_text(text).split())
    return folded if len(folded) <= limit else folded[:limit].rstrip() + "…"


def _text_body(
    shown: pd.DataFrame, data: TextMembershipDataModule, folder: Path, title: str
) -> tuple[list[str], str, str]:
    texts = record_texts(data, shown["index"].to_numpy(np.int64))
    rows = [c | {"text": snippet(t)} for c, t in zip(_cells(shown, data), texts, strict=True)]
    return [], markdown_table(rows), html_table(rows)


# --- tabular -----------------------------------------------------------------------
def class_stats(rows: np.ndarray) -> tuple[np.ndarray, float]:
    """A class's mean ``[D]`` and median distance of its rows ``[n, D]`` to that mean."""
    mean = rows.mean(axis=0)
    return mean, float(np.median(np.linalg.norm(rows - mean, axis=1)))


def feature_summary(
    x: np.ndarray, mean: np.ndarray, typical: float, top: int = TOP_FEATURES
) -> FeatureSummary:
    """How record ``x`` ``[D]`` stands against its class's ``mean`` and median distance.

    >>> s = feature_summary(np.array([0.0, 5.0, 1.0]), np.array([0.0, 1.0, 1.0]), 2.0, top=1)
    >>> s.nonzero, s.features, s.outlier
    (2, [(1, 5.0, 1.0)], 2.0)
    """
    gap = np.abs(x - mean)
    most = np.argsort(-gap, kind="stable")[:top]
    distance = float(np.linalg.norm(x - mean))
    if typical > 0:
        outlier = distance / typical
    else:
        outlier = 0.0 if distance == 0 else math.inf
    features = [(int(j), float(x[j]), float(mean[j])) for j in most]
    return FeatureSummary(int(np.count_nonzero(x)), features, outlier)


def feature_summaries(
    pool: Pool, index: np.ndarray, top: int = TOP_FEATURES
) -> list[FeatureSummary]:
    """:func:`feature_summary` of pool records ``index``, each against the whole pool's
    members of its class (itself included); inputs ``[N, ...]`` are flattened to ``[N, D]``."""
    labels = np.asarray(pool.labels)

    def features(rows: np.ndarray) -> np.ndarray:
        return rows_of(pool.inputs, rows).reshape(len(rows), -1).astype(np.float64)

    stats = {
        int(c): class_stats(features(np.flatnonzero(labels == c))) for c in np.unique(labels[index])
    }
    return [
        feature_summary(x, *stats[int(labels[n])], top)
        for x, n in zip(features(index), index, strict=True)
    ]


def summary_cells(summary: FeatureSummary) -> dict[str, str]:
    """A :class:`FeatureSummary` as table cells.

    >>> cells = summary_cells(FeatureSummary(2, [(7, 50.0, 2.5), (0, 1.0, 0.25)], 3.14159))
    >>> cells["most unlike its class"], cells["outlier score"]
    ('f7=50 (class 2.5); f0=1 (class 0.25)', '3.14')
    """
    most = "; ".join(f"f{j}={v:.3g} (class {m:.3g})" for j, v, m in summary.features)
    return {
        "nonzero": str(summary.nonzero),
        "most unlike its class": most,
        "outlier score": f"{summary.outlier:.2f}",
    }


def _tabular_body(
    shown: pd.DataFrame, data: MembershipDataModule, folder: Path, title: str
) -> tuple[list[str], str, str]:
    summaries = feature_summaries(data.pool, shown["index"].to_numpy(np.int64))
    rows = [c | summary_cells(s) for c, s in zip(_cells(shown, data), summaries, strict=True)]
    return [], markdown_table(rows), html_table(rows)


BODIES = {IMAGE: _image_body, TEXT: _text_body, TABULAR: _tabular_body}


def _cells(shown: pd.DataFrame, data: MembershipDataModule) -> list[dict[str, str]]:
    names = class_names(data)
    return [record_cells(row, names) for _, row in shown.iterrows()]


def _write_text(path: Path, text: str) -> str:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return path.name


def write_gallery(
    records: pd.DataFrame,
    data_module: MembershipDataModule,
    folder: Path,
    title: str = "",
    max_records: int = 24,
) -> Gallery:
    """Show the first ``max_records`` records as their pool holds them, in ``folder``.

    Args:
        records: one row per record, best first, with the columns
            :data:`RECORD_COLUMNS` (``index`` is the pool index).
        data_module: the data module of the pool the records index (loads its pool).
        folder: where ``gallery.md``, ``gallery.html`` (and ``gallery.png`` for images)
            are written; created if missing.
        title: heading of the gallery.
        max_records: how many records to show at most.

    Returns:
        The :class:`Gallery`.

    Raises:
        ValueError: if the records lack a column, or are not of this pool (an index
            outside it, a label other than the pool's).
    """
    shown = records.head(max_records).reset_index(drop=True)
    problem = records_mismatch(shown, data_module.pool)
    if problem:
        raise ValueError(f"cannot show the records of {type(data_module).__name__}: {problem}")
    kind = pool_kind(data_module.pool.inputs, data_module)
    files, body_md, body_html = BODIES[kind](shown, data_module, Path(folder), title)
    markdown = (f"## {title}\n\n" if title else "") + body_md
    heading = f"<h3>{html.escape(title)}</h3>\n" if title else ""
    fragment = f'<div class="mia-gallery mia-gallery-{kind}">\n{heading}{body_html}</div>\n'
    files += [_write_text(Path(folder) / "gallery.md", markdown)]
    files += [_write_text(Path(folder) / "gallery.html", fragment)]
    return Gallery(kind=kind, files=files, markdown=markdown, html=fragment)


def first_line(err: BaseException) -> str:
    """``"Type: first line of the message"``; the CLI's exit on a parse error says so.

    >>> first_line(FileNotFoundError("no file x\\nPass --data.root DIR"))
    'FileNotFoundError: no file x'
    >>> first_line(SystemExit(2))
    'the config does not parse: its error is printed above'
    """
    if isinstance(err, SystemExit):
        return "the config does not parse: its error is printed above"
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def gallery_for_config(
    records: pd.DataFrame,
    config: Path,
    folder: Path,
    title: str = "",
    overrides: Sequence[str] = (),
) -> Gallery | str:
    """:func:`write_gallery` over the pool of a fit config, or one line saying why not.

    The gallery is a side product of an audit, so a pool that cannot be loaded (its
    files missing, no download offline, a config that does not build) or that the
    records are not of yields that line instead of an exception.

    Args:
        records: as :func:`write_gallery`'s.
        config: the fit config the group was trained with (a shipped one, or the
            ``config.yaml`` a fit logged).
        folder: where the gallery is written.
        title: heading of the gallery.
        overrides: further fit arguments, e.g. ``["--data.root=DIR"]``.
    """
    from mia_bench.lightning_cli import instantiate_from_config  # the CLI is slow to import

    try:
        _, data = instantiate_from_config(Path(config), overrides)
        pool = data.pool
    except (Exception, SystemExit) as err:  # a parse error of the CLI exits
        return (
            f"no gallery: the pool of {config} could not be loaded ({first_line(err)}); "
            "audit from the folder the group was trained in (a relative data root is read "
            "from there)"
        )
    problem = records_mismatch(records, pool)
    if problem:
        return f"no gallery: {problem}; pass the config the group was trained with"
    return write_gallery(records, data, folder, title)
