"""Reports people want to look at: one builder, two renderings (a self-contained HTML page and Markdown).

A ``Report`` is a list of blocks (headings, paragraphs, tables, key-value tables, PNG images, side-by-side
examples, warnings). The same blocks render to HTML (inline CSS, images embedded as base64 data URIs or linked
relatively) and to Markdown, so the two files never disagree. Model text is always escaped: a completion that
contains ``<script>`` shows as text, never runs.

Paragraphs and warnings written by *our* code may use two bits of inline markup, ``**bold**`` and ```code```;
text from models (example blocks, table cells) gets no markup at all.

This module knows no stage's data: the stages draw their own plots (``trainer.plots``, ``judge.report``) with
``pyplot()`` and ``save_png()``, which use matplotlib's Agg backend imported only when a plot is drawn.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from prefloop.files import atomic_path, atomic_write_text

Cell = str | int | float | bool | None


# ------------------------------------------------------------------------------------------------ numbers

def fmt(value: Any, digits: int = 3) -> str:
    """A table cell as text: floats to ``digits`` significant figures (no '1e-05' surprises for ordinary
    numbers), ints with thousands separators, None as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        if value == 0:
            return "0"
        mag = abs(value)
        if mag >= 10 ** digits:
            return f"{value:,.0f}"
        if mag >= 1e-3:
            decimals = max(0, digits - 1 - int(math.floor(math.log10(mag))))
            return f"{value:.{decimals}f}"
        return f"{value:.{digits - 1}e}"
    return str(value)


def pct(value: float | None, digits: int = 1) -> str:
    """A fraction in [0, 1] as a percentage ('62.5%')."""
    return "—" if value is None else f"{100 * value:.{digits}f}%"


# ------------------------------------------------------------------------------------------------- blocks

@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Callout:
    """A warning box (not called Warning: that is Python's built-in exception class)."""

    text: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Cell]]
    caption: str | None = None


@dataclass
class Image:
    path: Path
    caption: str | None = None
    alt: str = ""


@dataclass
class Example:
    """One prompt and several answers shown side by side (e.g. reference vs trained), plus a small note
    (the verdict) under them."""

    title: str
    prompt: str
    answers: list[tuple[str, str]]
    note: str | None = None


@dataclass
class Report:
    """Build with the methods below, then ``write(folder)`` or ``to_html()`` / ``to_markdown()``."""

    title: str
    subtitle: str | None = None
    blocks: list[Any] = field(default_factory=list)

    # -- building
    def heading(self, text: str, level: int = 2) -> "Report":
        self.blocks.append(Heading(text, max(1, min(level, 4))))
        return self

    def paragraph(self, text: str) -> "Report":
        self.blocks.append(Paragraph(text))
        return self

    def warning(self, text: str) -> "Report":
        self.blocks.append(Callout(text))
        return self

    def table(self, rows: Iterable[Sequence[Cell]] | Iterable[Mapping[str, Cell]],
              headers: Sequence[str] | None = None, caption: str | None = None) -> "Report":
        """Rows as sequences (with ``headers``) or as dicts (headers are the union of keys, in first-seen order)."""
        rows = list(rows)
        if rows and isinstance(rows[0], Mapping):
            keys: list[str] = list(headers or [])
            if not keys:
                for row in rows:
                    keys += [k for k in row if k not in keys]
            table_rows = [[row.get(k) for k in keys] for row in rows]  # type: ignore[union-attr]
        else:
            keys = list(headers or [])
            table_rows = [list(r) for r in rows]  # type: ignore[arg-type]
        self.blocks.append(Table(keys, table_rows, caption))
        return self

    def key_values(self, items: Mapping[str, Cell] | Iterable[tuple[str, Cell]], caption: str | None = None,
                   headers: tuple[str, str] = ("", "")) -> "Report":
        pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
        self.blocks.append(Table(list(headers), [[k, v] for k, v in pairs], caption))
        return self

    def image(self, path: str | Path, caption: str | None = None, alt: str = "") -> "Report":
        self.blocks.append(Image(Path(path), caption, alt or Path(path).stem.replace("_", " ")))
        return self

    def example(self, title: str, prompt: str, answers: Mapping[str, str] | Sequence[tuple[str, str]],
                note: str | None = None) -> "Report":
        pairs = list(answers.items()) if isinstance(answers, Mapping) else list(answers)
        self.blocks.append(Example(title, prompt, [(str(k), "" if v is None else str(v)) for k, v in pairs], note))
        return self

    def extend(self, other: "Report", heading_offset: int = 1) -> "Report":
        """Append another report's blocks (its title becomes a heading), e.g. the judge's report inside the loop's."""
        self.heading(other.title, 1 + heading_offset)
        if other.subtitle:
            self.paragraph(other.subtitle)
        for block in other.blocks:
            if isinstance(block, Heading):
                block = Heading(block.text, min(4, block.level + heading_offset))
            self.blocks.append(block)
        return self

    # -- rendering
    def to_html(self, base_dir: str | Path | None = None, embed_images: bool = True) -> str:
        """A self-contained page. Images are embedded as data URIs, or (``embed_images=False``) linked relative
        to ``base_dir`` (the folder the HTML file will live in)."""
        parts = [f"<h1>{_inline_html(self.title)}</h1>"]
        if self.subtitle:
            parts.append(f'<p class="subtitle">{_inline_html(self.subtitle)}</p>')
        for block in self.blocks:
            parts.append(_block_html(block, base_dir, embed_images))
        body = "\n".join(parts)
        return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                f"<title>{html.escape(self.title)}</title>\n<style>{CSS}</style>\n</head>\n"
                f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n")

    def to_markdown(self, base_dir: str | Path | None = None) -> str:
        """The same content as Markdown; images are linked relative to ``base_dir``."""
        parts = [f"# {_md_text(self.title)}"]
        if self.subtitle:
            parts.append(_md_inline(self.subtitle))
        for block in self.blocks:
            parts.append(_block_md(block, base_dir))
        return "\n\n".join(parts) + "\n"

    def write(self, folder: str | Path, name: str = "report", embed_images: bool = True) -> tuple[Path, Path]:
        """Write ``name.html`` and ``name.md`` into ``folder`` (each atomically) and return their paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        html_path, md_path = folder / f"{name}.html", folder / f"{name}.md"
        atomic_write_text(html_path, self.to_html(folder, embed_images))
        atomic_write_text(md_path, self.to_markdown(folder))
        return html_path, md_path


# ------------------------------------------------------------------------------------------- HTML pieces

CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#dde1e8; --bg:#ffffff; --soft:#f5f7fa; --accent:#2f6fde;
        --warn-bg:#fff6e0; --warn-line:#e7a500; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
       font:15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 26px; margin: 8px 0 4px; }
h2 { font-size: 20px; margin: 32px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 20px 0 6px; }
h4 { font-size: 14px; margin: 16px 0 4px; color: var(--muted); }
p { margin: 6px 0 10px; }
.subtitle { color: var(--muted); margin-top: 0; }
code { font: 13px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: var(--soft);
       padding: 1px 4px; border-radius: 3px; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 14px; }
caption { caption-side: top; text-align: left; color: var(--muted); padding-bottom: 4px; }
th, td { border: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 10px 0 18px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 13px; }
.warning { background: var(--warn-bg); border-left: 4px solid var(--warn-line); padding: 8px 12px;
           margin: 10px 0; border-radius: 3px; }
.warning::before { content: "⚠ "; }
.example { border: 1px solid var(--line); border-radius: 6px; margin: 12px 0 18px; overflow: hidden; }
.example h4 { margin: 0; padding: 6px 12px; background: var(--soft); color: var(--fg);
              border-bottom: 1px solid var(--line); }
.example .prompt { padding: 8px 12px; border-bottom: 1px solid var(--line); }
.example .answers { display: grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); }
.example .answer { padding: 8px 12px; border-right: 1px solid var(--line); min-width: 0; }
.example .answer:last-child { border-right: none; }
.example .label { font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted);
                  margin-bottom: 4px; }
.example pre, .prompt pre { margin: 0; white-space: pre-wrap; word-wrap: break-word; overflow-wrap: anywhere;
                            font: 13px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.example .note { padding: 6px 12px; border-top: 1px solid var(--line); background: var(--soft); font-size: 13px;
                 color: var(--muted); }
"""

_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+)`")


def _inline_html(text: str) -> str:
    """Our own prose: escape, then ``**bold**`` and ```code```."""
    out = html.escape(text)
    out = _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", out)
    return _BOLD.sub(lambda m: f"<strong>{m.group(1)}</strong>", out)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _table_html(block: Table) -> str:
    out = ["<table>"]
    if block.caption:
        out.append(f"<caption>{_inline_html(block.caption)}</caption>")
    if any(h for h in block.headers):
        out.append("<thead><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in block.headers)
                   + "</tr></thead>")
    out.append("<tbody>")
    for row in block.rows:
        cells = []
        for value in row:
            cls = ' class="num"' if is_number(value) else ""
            cells.append(f"<td{cls}>{html.escape(fmt(value))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _image_src(path: Path, base_dir: str | Path | None, embed: bool) -> str:
    if embed or base_dir is None:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f"data:image/png;base64,{data}"
    return html.escape(_relative(path, base_dir), quote=True)


def _relative(path: Path, base_dir: str | Path | None) -> str:
    if base_dir is None:
        return path.as_posix()
    try:
        return Path(os.path.relpath(path.resolve(), Path(base_dir).resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return path.resolve().as_posix()


def _block_html(block: Any, base_dir: str | Path | None, embed: bool) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{_inline_html(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        return f"<p>{_inline_html(block.text)}</p>"
    if isinstance(block, Callout):
        return f'<div class="warning">{_inline_html(block.text)}</div>'
    if isinstance(block, Table):
        return _table_html(block)
    if isinstance(block, Image):
        if not block.path.exists():
            return f'<div class="warning">missing image {html.escape(str(block.path))}</div>'
        cap = f"<figcaption>{_inline_html(block.caption)}</figcaption>" if block.caption else ""
        return (f'<figure><img src="{_image_src(block.path, base_dir, embed)}" '
                f'alt="{html.escape(block.alt, quote=True)}">{cap}</figure>')
    if isinstance(block, Example):
        answers = "".join(
            f'<div class="answer"><div class="label">{html.escape(label)}</div>'
            f"<pre>{html.escape(text) if text.strip() else '<em>(empty answer)</em>'}</pre></div>"
            for label, text in block.answers)
        note = f'<div class="note">{html.escape(block.note)}</div>' if block.note else ""
        return (f'<div class="example"><h4>{html.escape(block.title)}</h4>'
                f'<div class="prompt"><div class="label">prompt</div><pre>{html.escape(block.prompt)}</pre></div>'
                f'<div class="answers">{answers}</div>{note}</div>')
    raise TypeError(f"unknown report block {type(block).__name__}")


# --------------------------------------------------------------------------------------- Markdown pieces

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


def _md_text(text: str) -> str:
    """Untrusted text on one line: Markdown and HTML specials escaped, newlines as spaces."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def _md_inline(text: str) -> str:
    """Our own prose keeps ``**bold**`` and ```code```; HTML is neutralised."""
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _md_cell(value: Cell) -> str:
    return _md_text(fmt(value)) or " "


def _table_md(block: Table) -> str:
    width = max([len(block.headers)] + [len(r) for r in block.rows] + [1])
    headers = list(block.headers) + [""] * (width - len(block.headers))
    out = []
    if block.caption:
        out.append(f"*{_md_inline(block.caption)}*\n")
    out.append("| " + " | ".join(_md_text(str(h)) or " " for h in headers) + " |")
    aligns = []
    for i in range(width):
        numeric = bool(block.rows) and all(is_number(r[i]) for r in block.rows if i < len(r) and r[i] is not None)
        numeric = numeric and any(i < len(r) and r[i] is not None for r in block.rows)
        aligns.append("---:" if numeric else "---")
    out.append("| " + " | ".join(aligns) + " |")
    for row in block.rows:
        cells = list(row) + [None] * (width - len(row))
        out.append("| " + " | ".join(_md_cell(c) if c is not None else "—" for c in cells) + " |")
    return "\n".join(out)


def _fence(text: str) -> str:
    """A fenced block that the text cannot close: the fence is longer than any backtick run inside."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _block_md(block: Any, base_dir: str | Path | None) -> str:
    if isinstance(block, Heading):
        return "#" * block.level + " " + _md_text(block.text)
    if isinstance(block, Paragraph):
        return _md_inline(block.text)
    if isinstance(block, Callout):
        return "> **Warning:** " + _md_inline(block.text).replace("\n", "\n> ")
    if isinstance(block, Table):
        return _table_md(block)
    if isinstance(block, Image):
        alt = _md_text(block.alt)
        link = _relative(block.path, base_dir).replace(" ", "%20").replace(")", "%29")
        cap = f"\n\n*{_md_inline(block.caption)}*" if block.caption else ""
        return f"![{alt}]({link}){cap}"
    if isinstance(block, Example):
        out = [f"#### {_md_text(block.title)}", "**prompt**", _fence(block.prompt)]
        for label, text in block.answers:
            out += [f"**{_md_text(label)}**", _fence(text if text.strip() else "(empty answer)")]
        if block.note:
            out.append(f"*{_md_text(block.note)}*")
        return "\n\n".join(out)
    raise TypeError(f"unknown report block {type(block).__name__}")


# ------------------------------------------------------------------------------------------------- plots

def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display), imported only when a plot is drawn."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, out_path: str | Path) -> Path:
    """Write ``fig`` as a PNG atomically (a killed run never leaves half an image) and close it."""
    import matplotlib.pyplot as plt

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out_path


def load_json(path: str | Path) -> Any:
    """A small JSON file, or None when it is missing (reports show what exists and say what does not)."""
    path = Path(path)
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
