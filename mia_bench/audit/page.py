"""The one-page audit report: ``report.md`` and a self-contained ``report.html``.

One page for the reader who decides: the attacks' table, the ROC on log scale with its
intervals, attack against epoch, the empirical epsilon, the records that leak and their
gallery, GMIA's records, and what the numbers can and cannot say. The HTML embeds its
figures (base64), so the file opens in any browser, without MLflow; the Markdown links
them by name, beside it in the audit's folder (the audit run's artifacts).
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path

CAVEATS = (
    "What these numbers can and cannot say. Intervals are 95%: AUC's from a stratified "
    "bootstrap over the pool's examples, TPR's and FPR's exact (Clopper-Pearson) at the "
    "threshold the TPR is read at; the spread over targets is the training's randomness. "
    "The empirical epsilon is a lower bound for the training algorithm, certified by the "
    "attacks' thresholds together at 95% confidence: it can show that a model leaks at "
    "least so much, never that it is private. One model's pool examples are not the "
    "independent canaries of a formal DP audit (Jagielski et al. 2020, Nasr et al. 2021), "
    "so the bound is loose and far below an accountant's epsilon."
)


def _inline(text: str) -> str:
    """Escape, then ``code`` and **bold**."""
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_to_html(text: str, folder: Path | None = None) -> str:
    """The Markdown mia-bench writes (headings, paragraphs, pipe tables, images) as HTML;
    images found in ``folder`` are embedded as data URIs.

    >>> print(markdown_to_html("## A\\n\\n| x | y |\\n|---|---|\\n| 1 | `b` |\\n"))
    <h2>A</h2>
    <table><tr><th>x</th><th>y</th></tr>
    <tr><td>1</td><td><code>b</code></td></tr></table>
    """
    out, table, paragraph = [], [], []

    def flush() -> None:
        if table:
            head, *body = [r for r in table if not re.fullmatch(r"\|?[\s:|-]+\|?", r)]
            rows = ["<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in _cells(head)) + "</tr>"]
            rows += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in _cells(r)) + "</tr>"
                     for r in body]  # fmt: skip
            out.append("<table>" + "\n".join(rows) + "</table>")
            table.clear()
        if paragraph:
            out.append("<p>" + _inline(" ".join(paragraph)) + "</p>")
            paragraph.clear()

    for line in text.splitlines():
        image = re.fullmatch(r"!\[([^\]]*)\]\(([^)]+)\)", line.strip())
        if line.startswith("|"):
            if paragraph:
                flush()
            table.append(line)
            continue
        flush()
        if image:
            out.append(_image(image.group(2), image.group(1), folder))
        elif heading := re.match(r"(#{1,4}) (.*)", line):
            level = len(heading.group(1))
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif line.strip():
            paragraph.append(line.strip())
    flush()
    return "\n".join(out)


def _image(name: str, alt: str, folder: Path | None) -> str:
    path = folder / name if folder is not None else None
    src = name
    if path is not None and path.is_file():
        src = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
    caption = f"<figcaption>{_inline(alt)}</figcaption>"
    return f'<figure><img src="{src}" alt="{html.escape(alt)}">{caption}</figure>'


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222;
       line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .6em 0; font-size: .88em; }
th, td { border: 1px solid #ccc; padding: .25em .55em; text-align: left; }
th { background: #f2f2f2; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: .8em 0; } img { max-width: 100%; }
figcaption { font-size: .85em; color: #555; }
code { background: #f3f3f3; padding: 0 .2em; }
.meta { color: #555; font-size: .92em; }
"""


def report_sections(doc: dict, folder: Path, gallery_markdown: str = "") -> list[str]:
    """The report's Markdown, section by section, from an audit document and the files
    written beside it."""
    targets = doc.get("targets", [])
    first = min(targets) if targets else None
    epoch = doc.get("epoch")
    sections = [
        f"# Membership audit of `{doc.get('group', doc.get('checkpoint', 'a model'))}`",
        f"Epoch {epoch}; {len(targets)} target(s), each attacked with the references "
        f"{', '.join(f'`{r}`' for r in doc.get('references', [])) or 'given'}; "
        f"FPRs {', '.join(f'{100 * x:g}%' for x in doc.get('fprs', []))}."
        + (f" Audit run `{doc['run_id']}`." if doc.get("run_id") else ""),
        "## Attacks (mean ± std over the targets)",
        doc.get("markdown", ""),
    ]
    if (folder / "roc.png").is_file():
        sections += [
            f"## ROC of target run {first} (log scale)",
            "![ROC curves, shaded: exact 95% interval of the TPR at each FPR](roc.png)",
        ]
    if doc.get("epochs_markdown"):
        sections += ["## Attack against epoch", doc["epochs_markdown"]]
        if (folder / "epochs.png").is_file():
            sections.append("![attack AUC and TPR against epoch, mean over targets](epochs.png)")
    if doc.get("bounds_markdown"):
        sections += ["## Empirical privacy: the epsilon the attacks certify"]
        sections.append(doc["bounds_markdown"])
    if doc.get("leaks"):
        sections += ["## The records that leak", doc["leaks"]["markdown"]]
        if gallery_markdown:
            sections.append(gallery_markdown)
        elif doc.get("gallery_note"):
            sections.append(doc["gallery_note"])
    if doc.get("gmia_markdown"):
        sections += ["## GMIA on its vulnerable records (Long et al. 2018)", doc["gmia_markdown"]]
    sections += ["## What the numbers mean", CAVEATS]
    return sections


def write_report(
    doc: dict, folder: Path, gallery_markdown: str = "", gallery_html: str = ""
) -> Sequence[str]:
    """Write ``report.md`` and ``report.html`` into ``folder``; returns their names.

    ``gallery_html`` (self-contained, from :mod:`mia_bench.audit.gallery`) replaces the
    gallery's Markdown in the HTML page.
    """
    from mia_bench.store.artifacts import atomic_write

    sections = report_sections(doc, folder, gallery_markdown)
    markdown = "\n\n".join(s.strip() for s in sections if s) + "\n"
    parts = []
    for section in sections:
        if gallery_html and section is gallery_markdown:
            parts.append(gallery_html)
        elif section:
            parts.append(markdown_to_html(section, folder))
    title = html.escape(sections[0].lstrip("# ").replace("`", ""))
    page = (
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{STYLE}</style></head>\n<body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
    atomic_write(folder / "report.md", lambda f: f.write(markdown.encode()))
    atomic_write(folder / "report.html", lambda f: f.write(page.encode()))
    return ["report.md", "report.html"]
