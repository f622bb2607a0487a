"""Model cards rendered for a terminal (``zoo card NAME``).

The card's Markdown is parsed with :func:`zoo.cards.site.parse_blocks` (the same subset the site renders)
and laid out for a fixed width: headings underlined, paragraphs and list items word-wrapped with
hanging indents, tables aligned in columns (cells wrapped when the table is wider than the terminal),
code blocks indented by four spaces and never wrapped, links shown as ``text <url>``. The YAML front
matter and HTML comments are left out. ANSI colour is used only when asked, or, by default, when
stdout is a tty and ``NO_COLOR`` is unset; box-drawing characters only when the output encoding has them.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterable

from zoo.cards.site import (
    Block, Code, CodeBlock, Emph, Heading, Inline, Link, ListBlock, Paragraph, Quote, Rule, Strong, Table, Text,
    parse_blocks, parse_inline, plain_text, strip_front_matter,
)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
RESET = "\x1b[0m"
STYLES = {"bold": "\x1b[1m", "code": "\x1b[36m", "link": "\x1b[4;34m", "em": "\x1b[3m", "dim": "\x1b[2m",
          "h1": "\x1b[1;4m", "h2": "\x1b[1;36m", "h3": "\x1b[1m"}


def use_colour(stream=None) -> bool:
    """True when ``stream`` (default stdout) is a tty, ``NO_COLOR`` is unset and TERM is not ``dumb``."""
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def visible_len(s: str) -> int:
    return len(_ANSI.sub("", s))


class _Style:
    def __init__(self, colour: bool, boxes: bool):
        self.colour, self.boxes = colour, boxes

    def paint(self, text: str, *styles: str) -> str:
        if not self.colour or not styles or not text:
            return text
        return "".join(STYLES[s] for s in styles) + text + RESET

    def words(self, nodes: Iterable[Inline], styles: tuple[str, ...] = ()) -> list[tuple[str, bool]]:
        """Inline nodes -> painted pieces; the flag says whether a space may break before the piece."""
        out: list[tuple[str, bool]] = []

        def add(text: str, st: tuple[str, ...]) -> None:
            for part in re.split(r"(\s+)", text):
                if not part:
                    continue
                if part.isspace():
                    out.append(("", True))
                else:
                    out.append((self.paint(part, *st), False))

        for node in nodes:
            if isinstance(node, Text):
                add(node.text, styles)
            elif isinstance(node, Code):
                add(node.text, styles + ("code",))
            elif isinstance(node, Strong):
                out.extend(self.words(node.children, styles + ("bold",)))
            elif isinstance(node, Emph):
                out.extend(self.words(node.children, styles + ("em",)))
            elif isinstance(node, Link):
                label = plain_text(node.children)
                out.extend(self.words(node.children, styles + ("link",)))
                if label != node.href:
                    out.append(("", True))
                    out.append((self.paint(f"<{node.href}>", *(styles + ("dim",))), False))
        return out


def _wrap(pieces: list[tuple[str, bool]], width: int) -> list[str]:
    """Greedy word wrap of painted pieces to ``width`` visible columns (long words stay whole)."""
    # join pieces not separated by a space into words
    words: list[str] = []
    glue = False
    for text, is_space in pieces:
        if is_space:
            glue = False
            continue
        if glue and words:
            words[-1] += text
        else:
            words.append(text)
        glue = True
    lines, cur, cur_len = [], [], 0
    for w in words:
        n = visible_len(w)
        if cur and cur_len + 1 + n > width:
            lines.append(" ".join(cur))
            cur, cur_len = [], 0
        cur.append(w)
        cur_len += n + (1 if cur_len else 0)
    if cur:
        lines.append(" ".join(cur))
    return lines or [""]


def _hard_wrap(line: str, width: int) -> list[str]:
    """Split one plain/painted line into chunks of at most ``width`` visible characters."""
    plain = _ANSI.sub("", line)
    if len(plain) <= width:
        return [line]
    return [plain[i:i + width] for i in range(0, len(plain), width)]


def _table(t: Table, st: _Style, width: int) -> list[str]:
    sep_v, sep_h, cross = ("│", "─", "┼") if st.boxes else ("|", "-", "+")
    header = [st.words(parse_inline(h), ("bold",)) for h in t.header]
    rows = [[st.words(parse_inline(c)) for c in r] for r in t.rows]
    ncol = len(t.header)

    def natural(cell: list[tuple[str, bool]]) -> int:
        return max(visible_len(line) for line in _wrap(cell, 10**6))

    def longest_word(cell: list[tuple[str, bool]]) -> int:
        return max([visible_len(w) for w, sp in cell if not sp] or [0])

    widths = [max(natural(r[c]) for r in [header, *rows]) for c in range(ncol)]
    budget = width - 3 * (ncol - 1) - 2
    # Shrink the widest column first, wrapping its cells, but never below its longest word (at most 24
    # columns); a table that still does not fit is shown as one record per row instead.
    floor = [min(widths[c], max(6, min(24, max(longest_word(r[c]) for r in [header, *rows])))) for c in range(ncol)]
    if sum(floor) > budget:
        return _records(t, st, width)
    while sum(widths) > budget:
        c = max((c for c in range(ncol) if widths[c] > floor[c]), key=lambda c: widths[c])
        widths[c] -= 1

    def lay(cells: list[list[tuple[str, bool]]]) -> list[str]:
        wrapped = []
        for c, cell in enumerate(cells):
            lines = []
            for line in _wrap(cell, widths[c]):
                lines.extend(_hard_wrap(line, widths[c]))
            wrapped.append(lines)
        out = []
        for k in range(max(len(w) for w in wrapped)):
            parts = []
            for c in range(ncol):
                text = wrapped[c][k] if k < len(wrapped[c]) else ""
                pad = " " * (widths[c] - visible_len(text))
                align = t.align[c]
                if align == "right":
                    parts.append(pad + text)
                elif align == "center":
                    parts.append(pad[:len(pad) // 2] + text + pad[len(pad) // 2:])
                else:
                    parts.append(text + pad)
            out.append((" " + f" {sep_v} ".join(parts)).rstrip())
        return out

    lines = lay(header)
    lines.append(sep_h + f"{sep_h}{cross}{sep_h}".join(sep_h * w for w in widths) + sep_h)
    for r in rows:
        lines.extend(lay(r))
    return lines


def _records(t: Table, st: _Style, width: int) -> list[str]:
    """A table too wide for the terminal: per row, the first cell as a title, then ``header  value`` lines."""
    keys = [plain_text(parse_inline(h)) for h in t.header]
    key_width = max(len(k) for k in keys[1:]) if len(keys) > 1 else 0
    lines: list[str] = []
    for r in t.rows:
        if lines:
            lines.append("")
        title = _wrap(st.words(parse_inline(r[0]), ("bold",)), width - 1)
        lines.extend(" " + line for line in title)
        for key, cell in zip(keys[1:], r[1:]):
            indent = 3 + key_width + 2
            body = []
            for line in _wrap(st.words(parse_inline(cell)), max(width - indent, 10)):
                body.extend(_hard_wrap(line, max(width - indent, 10)))
            lines.append("   " + st.paint(key.ljust(key_width), "dim") + "  " + body[0])
            lines.extend(" " * indent + line for line in body[1:])
    return lines


def _blocks(blocks: Iterable[Block], st: _Style, width: int) -> list[list[str]]:
    """Each block as its lines; blocks are separated by one blank line when joined."""
    out: list[list[str]] = []
    for b in blocks:
        if isinstance(b, Heading):
            title = plain_text(parse_inline(b.text))
            style = {1: "h1", 2: "h2"}.get(b.level, "h3")
            underline = {1: "═" if st.boxes else "=", 2: "─" if st.boxes else "-"}.get(b.level)
            lines = [st.paint(title, style)]
            if underline:
                lines.append(underline * min(len(title), width))
            out.append(lines)
        elif isinstance(b, Paragraph):
            out.append(_wrap(st.words(parse_inline(b.text)), width))
        elif isinstance(b, CodeBlock):
            lines = b.text.split("\n")
            out.append(["    " + st.paint(line, "code") if line else "" for line in lines])
        elif isinstance(b, ListBlock):
            lines = []
            for k, item in enumerate(b.items):
                marker = f"{b.start + k}. " if b.ordered else ("• " if st.boxes else "- ")
                pad = " " * len(marker)
                inner = _blocks(item, st, max(width - len(marker), 20))
                body = [line for i, block in enumerate(inner) for line in ([""] if i and not b.tight else []) + block]
                lines.extend([marker + body[0] if body[0] else marker.rstrip()]
                             + [pad + line if line else "" for line in body[1:]])
            out.append(lines)
        elif isinstance(b, Table):
            out.append(_table(b, st, width))
        elif isinstance(b, Quote):
            bar = "│ " if st.boxes else "| "
            inner = _blocks(b.children, st, max(width - 2, 20))
            out.append([bar + line for i, block in enumerate(inner) for line in ([""] if i else []) + block])
        elif isinstance(b, Rule):
            out.append([("─" if st.boxes else "-") * width])
    return out


def _can_encode(text: str, stream) -> bool:
    encoding = getattr(stream, "encoding", None) or "ascii"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def render_markdown(text: str, *, width: int | None = None, colour: bool | None = None,
                    boxes: bool | None = None, stream=None) -> str:
    """Markdown -> text laid out for a terminal of ``width`` columns (default: the terminal's, at most 100).

    ``colour`` and ``boxes`` (box-drawing characters) default to what ``stream`` (stdout) supports.
    """
    stream = sys.stdout if stream is None else stream
    if width is None:
        width = min(shutil.get_terminal_size((100, 24)).columns, 100)
    width = max(width, 30)
    st = _Style(use_colour(stream) if colour is None else colour,
                _can_encode("─│┼═•", stream) if boxes is None else boxes)
    blocks = _blocks(parse_blocks(strip_front_matter(text)), st, width)
    return "\n\n".join("\n".join(lines) for lines in blocks) + "\n"


def render_card(name: str, **kwargs) -> str:
    """The model card of ``name`` laid out for a terminal (see :func:`render_markdown`)."""
    from zoo.cards import model_card

    return render_markdown(model_card(name), **kwargs)
