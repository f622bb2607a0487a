"""Model cards, the model list and entry summaries for a terminal (``zoo card``, ``zoo list``, ``zoo info``).

Cards: the Markdown is parsed by :func:`zoo.cards.markdown.parser` (the tree the site renders: raw HTML is
text, comment lines and unsafe link targets are dropped) and laid out by rich's ``Markdown``, with three
changes: a link shows its target (``text (url)``; an autolink once), code blocks are indented by four
spaces and never wrapped (so that they can be copied), and table cells fold long words instead of cutting
them. The YAML front matter is left out.

The list: a rich ``Table`` of :data:`zoo.cards.index.INDEX_COLUMNS` that fits the terminal: model names
and numbers are shown whole, the task, weights and metric cells are cut with "…" when the row does not
fit, and ``wide`` shows every cell whole whatever the width.

ANSI colour is used only when asked, or, by default, when the stream (stdout) is a tty, ``NO_COLOR`` is
unset and TERM is not ``dumb``; otherwise the text is plain (no escape codes, no trailing spaces). The
characters rich draws (rules, bullets, "…") become ASCII when the stream's encoding lacks them.
"""
from __future__ import annotations

import io
import os
import re
import shutil
import sys
from typing import Any

from markdown_it.token import Token
from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.markdown import CodeBlock, Markdown, TableElement
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from zoo import weights as W
from zoo.cards.index import INDEX_COLUMNS, fmt_amount
from zoo.cards.markdown import parser, strip_front_matter
from zoo.cards.stats import model_stats

_TRAILING = re.compile(r"(?:[ \t]|\x1b\[[0-9;]*m)+$")
_SGR = re.compile(r"\x1b\[[0-9;]*m")
# What rich draws that an ASCII-only stream cannot show (table rules, bullets, quote bars, cut cells).
_ASCII = str.maketrans({"─": "-", "•": "*", "▌": "|", "…": "..."})
_NUMERIC = ("params (M)", "GFLOPs")
_CUT = ("task", "weights", "headline metric")  # cells cut with "…" when a row does not fit


def use_colour(stream=None) -> bool:
    """True when ``stream`` (default stdout) is a tty, ``NO_COLOR`` is unset and TERM is not ``dumb``."""
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def _can_encode(text: str, stream) -> bool:
    encoding = getattr(stream, "encoding", None) or "ascii"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _render(renderable: Any, *, width: int, colour: bool, unicode: bool) -> str:
    """``renderable`` as text ``width`` columns wide, trailing spaces removed (escape codes kept)."""
    console = Console(file=io.StringIO(), width=width, color_system="auto" if colour else None,
                      force_terminal=colour, no_color=not colour, highlight=False, markup=False, emoji=False,
                      legacy_windows=False)
    console.print(renderable, crop=False)  # code lines longer than the width stay whole
    lines: list[str] = []
    for line in console.file.getvalue().split("\n"):
        m = _TRAILING.search(line)
        line = line[:m.start()] + "".join(_SGR.findall(m.group())) if m else line
        if _SGR.sub("", line) or (lines and _SGR.sub("", lines[-1])):  # one blank line at a time, none first
            lines.append(line)
    while lines and not _SGR.sub("", lines[-1]):
        lines.pop()
    text = "\n".join(lines) + "\n"
    return text if unicode else text.translate(_ASCII)


# ------------------------------------------------------------------------------------ cards
class _CodeBlock(CodeBlock):
    """Indented by four spaces, never wrapped; highlighted by rich's Syntax when colour is on."""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        code = str(self.text).rstrip("\n")
        lines = Syntax(code, self.lexer_name, theme=self.theme).highlight(code).split("\n")
        text = Text("\n").join(Text("    ") + line if line.plain else line for line in lines)
        text.no_wrap, text.overflow = True, "ignore"
        yield text


class _Table(TableElement):
    """rich's Markdown table, folding long words (hashes, URLs) onto the next line instead of cutting them."""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for table in super().__rich_console__(console, options):
            for column in table.columns:
                column.overflow = "fold"
            yield table


def _show_targets_once(tokens: list[Token]) -> list[Token]:
    """Unwrap links whose text is their target (autolinks), which rich would print twice."""
    for block in tokens:
        if block.type != "inline" or not block.children:
            continue
        children, unwrap = [], False
        for i, token in enumerate(block.children):
            if token.type == "link_open":
                end = next(j for j in range(i, len(block.children)) if block.children[j].type == "link_close")
                label = "".join(t.content for t in block.children[i + 1:end])
                unwrap = label == token.attrGet("href") or token.markup == "autolink"
                if unwrap:
                    continue
            elif token.type == "link_close" and unwrap:
                unwrap = False
                continue
            children.append(token)
        block.children = children
    return tokens


class CardMarkdown(Markdown):
    """rich's Markdown over zoo's card parser (see the module docstring)."""

    elements = {**Markdown.elements, "fence": _CodeBlock, "code_block": _CodeBlock, "table_open": _Table}

    def __init__(self, markup: str):
        super().__init__(markup, hyperlinks=False)
        self.parsed = _show_targets_once(parser().parse(markup))


def render_markdown(text: str, *, width: int | None = None, colour: bool | None = None,
                    boxes: bool | None = None, stream=None) -> str:
    """Markdown -> text laid out for a terminal of ``width`` columns (default: the terminal's, at most 100).

    ``colour`` and ``boxes`` (non-ASCII characters: rules, bullets) default to what ``stream`` (stdout) supports.
    """
    stream = sys.stdout if stream is None else stream
    if width is None:
        width = min(shutil.get_terminal_size((100, 24)).columns, 100)
    return _render(CardMarkdown(strip_front_matter(text)), width=max(width, 30),
                   colour=use_colour(stream) if colour is None else colour,
                   unicode=_can_encode("─•▌…", stream) if boxes is None else boxes)


def render_card(name: str, **kwargs) -> str:
    """The model card of ``name`` laid out for a terminal (see :func:`render_markdown`)."""
    from zoo.cards import model_card

    return render_markdown(model_card(name), **kwargs)


# ------------------------------------------------------------------------------------ the model list
def _column_widths(rows: list[dict[str, str]], width: int) -> dict[str, int]:
    """Every cell whole when that fits ``width``; else headers wrap at spaces, model names and numbers stay
    whole and the task, weights and metric columns share what is left (the narrowest first). Below about
    60 columns the rows are wider than ``width``."""
    full = {c: max([len(c), *(len(r[c]) for r in rows)]) for c in INDEX_COLUMNS}
    gaps = 2 * (len(INDEX_COLUMNS) - 1)
    if sum(full.values()) + gaps <= width:
        return full
    word = {c: max(map(len, c.split())) for c in INDEX_COLUMNS}
    widths = {c: max([word[c], *(len(r[c]) for r in rows)]) for c in INDEX_COLUMNS if c not in _CUT}
    budget = width - gaps - sum(widths.values())
    cut = sorted(_CUT, key=lambda c: full[c])
    for i, c in enumerate(cut):
        widths[c] = max(2, min(full[c], budget // (len(cut) - i)))
        budget -= widths[c]
    return widths


def index_table(rows: list[dict[str, str]], *, width: int | None = None, wide: bool = False,
                colour: bool | None = None, stream=None) -> str:
    """``zoo list``: rows of :func:`zoo.cards.index.format_row` as a table that fits ``width`` columns
    (default: the terminal's, 80 when unknown; ``COLUMNS`` is honoured), or every cell whole with ``wide``."""
    stream = sys.stdout if stream is None else stream
    if width is None:
        width = shutil.get_terminal_size((80, 24)).columns
    widths = _column_widths(rows, 10**6 if wide else width)
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False, show_edge=False, header_style="bold")
    for column in INDEX_COLUMNS:
        table.add_column(column, justify="right" if column in _NUMERIC else "left", width=widths[column])
    for row in rows:
        table.add_row(*(Text(row[c], no_wrap=True, overflow="ellipsis") for c in INDEX_COLUMNS))
    return _render(table, width=sum(widths.values()) + 2 * (len(INDEX_COLUMNS) - 1),
                   colour=use_colour(stream) if colour is None else colour, unicode=_can_encode("─…", stream))


# ------------------------------------------------------------------------------------ zoo info
def _short(text: str, width: int = 80) -> str:
    """The first clause of ``text`` (up to ": " or "; "), cut at a word to at most ``width`` characters."""
    for sep in (": ", "; "):
        text = text.split(sep, 1)[0]
    return text if len(text) <= width else text[:width - 3].rsplit(" ", 1)[0] + "..."


def _preset_text(preset) -> str:
    args = ", ".join(f"{k}={v}" for k, v in preset.to_dict()["args"].items())
    return f"{preset.preset} ({args})" if args else preset.preset


def _tag_line(info, w) -> str:
    """One weights tag on one line: kind, default, licence, where the weights come from, every metric and who
    stands behind it."""
    kind = f"warm start from {w.warm_start}" if w.warm_start else w.kind
    if w.hub is not None and (W.BUNDLED_STORE / w.hub.repo / w.hub.revision / w.hub.file).is_file():
        kind += ", bundled (no download)"
    flags = ", ".join([kind, *(["default"] if w.tag == info.default_tag else []), f"licence {w.license}"])
    metrics = "; ".join(f"{m.metric} {m.value:g} ({m.dataset} {m.split}; {m.by})" for m in w.metrics) or "no metrics"
    return f"  {w.tag}  [{flags}]  {_short(w.source)}  |  {metrics}"


def info_text(info, tag: str | None = None) -> str:
    """``zoo info``: what a new user wants to know of an entry (``zoo info --json`` has every field)."""
    paper = info.paper
    stats = model_stats(info)
    order = sorted(info.weights, key=lambda t: (t != info.default_tag, t))                # the default first
    tags = [info.weights[t] for t in ([tag] if tag is not None else order)]
    if not info.weights:
        weights = "none published (create it with pretrained=False, or load your own file with checkpoint=PATH)"
    elif tag is not None:
        weights = f"tag {tag} of {len(info.weights)} (`zoo info {info.name}` lists them all)"
    else:
        default = (f"pretrained=True loads {info.default_tag}" if info.default_tag is not None
                   else "no default: name a tag, NAME.TAG")
        weights = f"{len(info.weights)} tag{'s' * (len(info.weights) != 1)}; {default}"
    rows = [
        ("paper", f"{paper.title} ({paper.venue} {paper.year})" + (f" {paper.link}" if paper.link else "")),
        ("licence", f"{info.license} (the code; each weights tag has its own)"),
        ("input size", f"{' x '.join(map(str, info.input_size))}  ({fmt_amount(stats.params / 1e6)} M parameters, "
                       f"{fmt_amount(stats.gflops)} GFLOPs)"),
        ("transforms", _preset_text(info.transforms_for(tag))),
        ("weights", weights),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{info.name}  ({info.task})", *(f"{k.ljust(width)}  {v}" for k, v in rows)]
    lines += [_tag_line(info, w) for w in tags]
    more = [f"`zoo card {info.name}` (model card)", f"`zoo info {info.name} --json` (every field)"]
    if info.weights:
        more.append(f"`zoo download {info.name if tag is None else f'{info.name}.{tag}'} --dry-run` (files, hashes, "
                    "converters)")
    lines.append(f"more: {', '.join(more)}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ zoo benchmark
BENCHMARK_COLUMNS = (("model", "model"), ("runtime", "runtime"), ("batch", "batch"), ("size", "size"),
                     ("median_ms", "median ms"), ("p90_ms", "p90 ms"), ("samples_per_second", "samples/s"),
                     ("peak_memory_mb", "peak MB"), ("params_m", "params (M)"), ("gflops", "GFLOPs"))


def benchmark_table(results: list[dict[str, Any]], *, colour: bool | None = None, stream=None) -> str:
    """``zoo benchmark`` results (``dataclasses.asdict`` of :class:`zoo.benchmark.BenchmarkResult`) as a table."""
    stream = sys.stdout if stream is None else stream
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False, show_edge=False, header_style="bold")
    for key, title in BENCHMARK_COLUMNS:
        table.add_column(title, justify="left" if key in ("model", "runtime", "size") else "right")

    def cell(result: dict[str, Any], key: str) -> str:
        value = result[key]
        if key == "size":
            return "x".join(map(str, value))
        if key == "runtime":
            return " ".join([value, result["dtype"]] + ["channels-last"] * result["channels_last"]
                            + ["train"] * result["train"])
        if value is None:
            return "-"
        return f"{value:.3g}" if isinstance(value, float) and key != "median_ms" else f"{value:.1f}" if isinstance(value, float) else str(value)

    for result in results:
        table.add_row(*(cell(result, key) for key, _ in BENCHMARK_COLUMNS))
    return _render(table, width=10**4,  # the table's natural width: numbers are never cut
                   colour=use_colour(stream) if colour is None else colour, unicode=_can_encode("─", stream))
