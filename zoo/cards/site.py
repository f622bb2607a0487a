"""``zoo site build OUTDIR``: a static site of the zoo, generated from the registry and the model cards.

Output: ``index.html`` (every entry; search, task and "has pretrained weights" filters, sortable
columns) and ``models/<name>.html`` (one page per entry, rendered from its card). Everything is
inline: no external CSS, JS, fonts or CDN, and no ``fetch()`` — the index data is embedded in the page
as ``<script type="application/json">`` — so the site works from ``file://`` as well as from any
static host. A Content-Security-Policy with the hashes of the inline scripts forbids anything else.

The output is deterministic (no timestamps), so :func:`site_problems` can tell whether a built site
is stale relative to the registry, the cards and ``model_stats.json``: it regenerates every file in
memory and compares.

:func:`build_site` writes only into a new or empty directory, or one it built before: its marker file
``.dynzoo-site`` (a version line, then the files the build wrote) is the only licence to replace or
remove a file, so files it did not write are never touched. Every file is written atomically.

Model pages: the registry facts (task, parameters, GFLOPs at the card's input size, licence), the
metrics of every weights tag, then the card's sections rendered from Markdown, except that the
card's ``Weights`` section (abbreviated revision and sha256) is replaced by the full registry table:
repo (linked at its revision), revision, file, size, sha256, source, licence. Every code block (usage,
BibTeX) has a copy button.

Markdown: :func:`parse_blocks` / :func:`parse_inline` read the subset the cards use — ATX headings,
paragraphs, ``-``/``*``/``1.`` lists (nested by indentation), pipe tables with alignment, fenced code,
block quotes, rules, inline code, links, ``**bold**``, ``*emphasis*``, bare ``http(s)`` URLs, HTML
comments (dropped). Raw HTML is never passed through: all text is escaped, and link targets other than
http(s), mailto and relative URLs are dropped. :mod:`zoo.cards.terminal` renders the same tree for terminals.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import html
import json
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Union

from zoo.cards.markdown import safe_href, strip_front_matter
from zoo.errors import RegistryError, SiteError
from zoo.registry import TASKS, ModelInfo, default_registry

# =========================================================================================== Markdown
# ---- inline nodes


@dataclasses.dataclass(frozen=True)
class Text:
    text: str


@dataclasses.dataclass(frozen=True)
class Code:
    text: str


@dataclasses.dataclass(frozen=True)
class Strong:
    children: tuple[Inline, ...]


@dataclasses.dataclass(frozen=True)
class Emph:
    children: tuple[Inline, ...]


@dataclasses.dataclass(frozen=True)
class Link:
    children: tuple[Inline, ...]
    href: str


Inline = Union[Text, Code, Strong, Emph, Link]

_PUNCT = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_BARE_URL = re.compile(r"https?://[^\s<>()\[\]`]*[^\s<>()\[\]`.,;:!?'\"]")
_LINK_TAIL = re.compile(r"\(\s*(<[^>\n]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)\s*\)")


def _find_code_end(s: str, i: int, run: int) -> int:
    """Index of the closing backtick run of exactly ``run`` backticks after ``i``, or -1."""
    j = i
    while True:
        j = s.find("`" * run, j)
        if j < 0:
            return -1
        end = j + run
        if (j == 0 or s[j - 1] != "`") and (end >= len(s) or s[end] != "`"):
            return j
        while end < len(s) and s[end] == "`":
            end += 1
        j = end


def _find_bracket_end(s: str, i: int) -> int:
    """Index of the ``]`` matching the ``[`` at ``i`` (skipping code spans and escapes), or -1."""
    depth, j = 0, i
    while j < len(s):
        c = s[j]
        if c == "\\":
            j += 2
            continue
        if c == "`":
            run = len(s[j:]) - len(s[j:].lstrip("`"))
            close = _find_code_end(s, j + run, run)
            if close >= 0:
                j = close + run
                continue
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
            if depth == 0:
                return j
        j += 1
    return -1


def parse_inline(s: str) -> tuple[Inline, ...]:
    """Inline Markdown -> nodes (code spans, links, bold, emphasis, bare URLs; everything else text)."""
    out: list[Inline] = []
    buf: list[str] = []

    def flush() -> None:
        if buf:
            out.append(Text("".join(buf)))
            buf.clear()

    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c == "\\" and i + 1 < n and s[i + 1] in _PUNCT:
            buf.append(s[i + 1])
            i += 2
            continue
        if c == "`":
            run = len(s[i:]) - len(s[i:].lstrip("`"))
            close = _find_code_end(s, i + run, run)
            if close < 0:
                buf.append("`" * run)
                i += run
                continue
            code = s[i + run:close].replace("\n", " ")
            if len(code) > 2 and code[0] == " " and code[-1] == " " and code.strip():
                code = code[1:-1]
            flush()
            out.append(Code(code))
            i = close + run
            continue
        if c == "[":
            end = _find_bracket_end(s, i)
            m = _LINK_TAIL.match(s, end + 1) if end > 0 else None
            if m:
                flush()
                out.append(Link(parse_inline(s[i + 1:end]), m.group(1).strip("<>")))
                i = m.end()
                continue
        if c == "<":
            m = re.compile(r"<((?:https?://|mailto:)[^\s<>]+)>").match(s, i)
            if m:
                flush()
                out.append(Link((Text(m.group(1)),), m.group(1)))
                i = m.end()
                continue
        if c == "h" and (i == 0 or not s[i - 1].isalnum()):
            m = _BARE_URL.match(s, i)
            if m:
                flush()
                out.append(Link((Text(m.group(0)),), m.group(0)))
                i = m.end()
                continue
        if c in "*_" and s.startswith(c * 2, i):
            close = s.find(c * 2, i + 2)
            inner = s[i + 2:close] if close > 0 else ""
            if inner and not inner[0].isspace() and not inner[-1].isspace():
                flush()
                out.append(Strong(parse_inline(inner)))
                i = close + 2
                continue
        if c in "*_" and (c == "*" or i == 0 or not s[i - 1].isalnum()):
            pattern = r"\*(?![\s*])(.+?)(?<![\s*])\*(?!\*)" if c == "*" else r"_(?![\s_])(.+?)(?<![\s_])_(?!\w)"
            m = re.compile(pattern).match(s, i)
            if m:
                flush()
                out.append(Emph(parse_inline(m.group(1))))
                i = m.end()
                continue
        buf.append(c)
        i += 1
    flush()
    return tuple(out)


def plain_text(nodes: Iterable[Inline]) -> str:
    """The text of inline nodes without markup."""
    out = []
    for node in nodes:
        if isinstance(node, (Text, Code)):
            out.append(node.text)
        else:
            out.append(plain_text(node.children))
    return "".join(out)


# ---- block nodes


@dataclasses.dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclasses.dataclass(frozen=True)
class Paragraph:
    text: str


@dataclasses.dataclass(frozen=True)
class CodeBlock:
    lang: str
    text: str


@dataclasses.dataclass(frozen=True)
class ListBlock:
    ordered: bool
    start: int
    items: tuple[tuple[Block, ...], ...]
    tight: bool = True  # no blank lines between or inside items: paragraphs render without <p>


@dataclasses.dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    align: tuple[str, ...]  # "", "left", "right", "center" per column
    rows: tuple[tuple[str, ...], ...]


@dataclasses.dataclass(frozen=True)
class Quote:
    children: tuple[Block, ...]


@dataclasses.dataclass(frozen=True)
class Rule:
    pass


Block = Union[Heading, Paragraph, CodeBlock, ListBlock, Table, Quote, Rule]

_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})\s*([^`\s]*)[^`]*$")
_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_RULE = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_ITEM = re.compile(r"^( *)([-*+]|\d{1,9}[.)])( +|$)(.*)$")
_TABLE_SEP = re.compile(r"^ *\|? *:?-+:? *(\| *:?-+:? *)*\|? *$")
_QUOTE = re.compile(r"^ {0,3}> ?(.*)$")
_COMMENT = re.compile(r"^ {0,3}<!--.*-->\s*$")


def split_row(line: str) -> list[str]:
    """Cells of a pipe-table row; ``|`` inside code spans or escaped as ``\\|`` does not split."""
    s = line.strip()
    if s.startswith("|"):
        s = s[1:]
    if s.endswith("|") and not s.endswith("\\|"):
        s = s[:-1]
    cells, cur, i = [], [], 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s) and s[i + 1] == "|":
            cur.append("|")
            i += 2
            continue
        if c == "`":
            run = len(s[i:]) - len(s[i:].lstrip("`"))
            close = _find_code_end(s, i + run, run)
            if close >= 0:
                cur.append(s[i:close + run])
                i = close + run
                continue
        if c == "|":
            cells.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    cells.append("".join(cur).strip())
    return cells


def _starts_block(lines: list[str], i: int) -> bool:
    line = lines[i]
    return bool(_FENCE.match(line) or _HEADING.match(line) or _RULE.match(line) or _QUOTE.match(line)
                or _COMMENT.match(line) or (_ITEM.match(line) and _ITEM.match(line).group(4).strip())
                or ("|" in line and i + 1 < len(lines) and _TABLE_SEP.match(lines[i + 1]) and "-" in lines[i + 1]))


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def parse_blocks(text: str) -> tuple[Block, ...]:
    """Block-level Markdown -> a tree of :data:`Block` nodes (tabs expand to 4 spaces)."""
    lines = text.expandtabs(4).split("\n")
    blocks: list[Block] = []
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        if not line.strip() or _COMMENT.match(line):
            i += 1
            continue
        fence = _FENCE.match(line)
        if fence:
            indent, mark, lang = len(fence.group(1)), fence.group(2), fence.group(3)
            body = []
            i += 1
            while i < n and not re.match(rf"^ {{0,3}}{re.escape(mark[0])}{{{len(mark)},}}\s*$", lines[i]):
                body.append(lines[i][min(indent, _indent(lines[i])):])
                i += 1
            blocks.append(CodeBlock(lang, "\n".join(body)))
            i += 1
            continue
        heading = _HEADING.match(line)
        if heading:
            blocks.append(Heading(len(heading.group(1)), (heading.group(2) or "").strip()))
            i += 1
            continue
        if _RULE.match(line):
            blocks.append(Rule())
            i += 1
            continue
        if "|" in line and i + 1 < n and _TABLE_SEP.match(lines[i + 1]) and "-" in lines[i + 1]:
            header = split_row(line)
            align = []
            for cell in split_row(lines[i + 1]):
                left, right = cell.startswith(":"), cell.endswith(":")
                align.append("center" if left and right else "right" if right else "left" if left else "")
            align = (align + [""] * len(header))[:len(header)]
            rows = []
            i += 2
            while i < n and lines[i].strip() and "|" in lines[i]:
                cells = split_row(lines[i])
                rows.append(tuple((cells + [""] * len(header))[:len(header)]))
                i += 1
            blocks.append(Table(tuple(header), tuple(align), tuple(rows)))
            continue
        if _QUOTE.match(line):
            inner = []
            while i < n and lines[i].strip():
                m = _QUOTE.match(lines[i])
                inner.append(m.group(1) if m else lines[i])
                i += 1
            blocks.append(Quote(parse_blocks("\n".join(inner))))
            continue
        item = _ITEM.match(line)
        if item and item.group(4).strip():
            i = _parse_list(lines, i, blocks)
            continue
        para = [line.strip()]
        i += 1
        while i < n and lines[i].strip() and not _starts_block(lines, i):
            para.append(lines[i].strip())
            i += 1
        blocks.append(Paragraph("\n".join(para)))
    return tuple(blocks)


def _parse_list(lines: list[str], i: int, blocks: list[Block]) -> int:
    first = _ITEM.match(lines[i])
    base = len(first.group(1))
    ordered = first.group(2)[0].isdigit()
    start = int(first.group(2)[:-1]) if ordered else 1
    items: list[list[str]] = []
    tight = True
    n = len(lines)
    while i < n:
        m = _ITEM.match(lines[i])
        if not m or len(m.group(1)) != base or m.group(2)[0].isdigit() != ordered or not m.group(4).strip():
            break
        content = base + len(m.group(2)) + len(m.group(3))
        body = [m.group(4)]
        i += 1
        while i < n:
            line = lines[i]
            if not line.strip():
                j = i
                while j < n and not lines[j].strip():
                    j += 1
                if j < n and _indent(lines[j]) > base:
                    body.extend([""] * (j - i))
                    i = j
                    continue
                break
            if _indent(line) > base:
                body.append(line[min(content, _indent(line)):])
                i += 1
                continue
            if body[-1].strip() and not _starts_block(lines, i):  # lazy continuation of a paragraph
                body.append(line.strip())
                i += 1
                continue
            break
        items.append(body)
        # a blank line followed by another item of this list continues it
        j = i
        while j < n and not lines[j].strip():
            j += 1
        nxt = _ITEM.match(lines[j]) if j < n else None
        if nxt and len(nxt.group(1)) == base and nxt.group(2)[0].isdigit() == ordered and nxt.group(4).strip():
            tight = tight and j == i
            i = j
    tight = tight and not any(not line.strip() for body in items for line in body)
    blocks.append(ListBlock(ordered, start, tuple(parse_blocks("\n".join(body)) for body in items), tight))
    return i


# ---- HTML rendering

def _esc(s: str) -> str:
    return html.escape(s, quote=True)


def inline_html(nodes: Iterable[Inline]) -> str:
    out = []
    for node in nodes:
        if isinstance(node, Text):
            out.append(_esc(node.text).replace("\n", " "))
        elif isinstance(node, Code):
            out.append(f"<code>{_esc(node.text)}</code>")
        elif isinstance(node, Strong):
            out.append(f"<strong>{inline_html(node.children)}</strong>")
        elif isinstance(node, Emph):
            out.append(f"<em>{inline_html(node.children)}</em>")
        else:
            href = safe_href(node.href)
            inner = inline_html(node.children)
            if href is None:
                out.append(inner)
            else:
                external = re.match(r"^https?:", href) is not None
                rel = ' rel="noopener noreferrer"' if external else ""
                out.append(f'<a href="{_esc(href)}"{rel}>{inner}</a>')
    return "".join(out)


def md_inline(s: str) -> str:
    """Inline Markdown -> HTML (escaped)."""
    return inline_html(parse_inline(s))


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def code_block_html(text: str, lang: str = "") -> str:
    cls = f' class="language-{_esc(lang)}"' if lang else ""
    label = f'<span class="lang">{_esc(lang)}</span>' if lang else ""
    return (f'<div class="code">{label}<button type="button" class="copy" aria-label="Copy code">Copy</button>'
            f"<pre><code{cls}>{_esc(text)}</code></pre></div>")


def blocks_html(blocks: Iterable[Block], *, ids: dict[str, int] | None = None, tight: bool = False) -> str:
    """Block nodes -> HTML. Headings get unique ``id`` slugs (shared through ``ids``)."""
    ids = {} if ids is None else ids
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            slug = slugify(plain_text(parse_inline(b.text)))
            ids[slug] = ids.get(slug, 0) + 1
            if ids[slug] > 1:
                slug = f"{slug}-{ids[slug]}"
            out.append(f'<h{b.level} id="{slug}">{md_inline(b.text)}</h{b.level}>')
        elif isinstance(b, Paragraph):
            out.append(md_inline(b.text) if tight else f"<p>{md_inline(b.text)}</p>")
        elif isinstance(b, CodeBlock):
            out.append(code_block_html(b.text, b.lang))
        elif isinstance(b, ListBlock):
            tag = "ol" if b.ordered else "ul"
            start = f' start="{b.start}"' if b.ordered and b.start != 1 else ""
            items = "".join(f"<li>{blocks_html(item, ids=ids, tight=b.tight)}</li>" for item in b.items)
            out.append(f"<{tag}{start}>{items}</{tag}>")
        elif isinstance(b, Table):
            def cell(tag: str, text: str, align: str) -> str:
                style = f' class="{align}"' if align else ""
                return f"<{tag}{style}>{md_inline(text)}</{tag}>"

            head = "".join(cell("th", h, a) for h, a in zip(b.header, b.align))
            body = "".join("<tr>" + "".join(cell("td", c, a) for c, a in zip(r, b.align)) + "</tr>" for r in b.rows)
            out.append(f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>')
        elif isinstance(b, Quote):
            out.append(f"<blockquote>{blocks_html(b.children, ids=ids)}</blockquote>")
        elif isinstance(b, Rule):
            out.append("<hr>")
    return "\n".join(out)


def markdown_to_html(text: str) -> str:
    """Markdown (the subset above) -> safe HTML."""
    return blocks_html(parse_blocks(text))


# =========================================================================================== the site
_CSS = """
:root{--fg:#1d232b;--muted:#5b6673;--bg:#fff;--panel:#f5f7fa;--line:#dde3ea;--accent:#0b63c5;--code:#f1f3f6}
@media (prefers-color-scheme:dark){:root{--fg:#e4e8ee;--muted:#9aa6b4;--bg:#14181d;--panel:#1c2229;
--line:#2f3843;--accent:#6cb0ff;--code:#20272f}}
*{box-sizing:border-box}
body{margin:0;font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
color:var(--fg);background:var(--bg)}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
header.top{padding:18px 28px;border-bottom:1px solid var(--line);background:var(--panel)}
header.top h1{margin:0;font-size:22px}header.top p{margin:4px 0 0;color:var(--muted)}
main{padding:20px 28px;max-width:1200px}
.controls{display:flex;flex-wrap:wrap;gap:12px;align-items:center;margin-bottom:14px}
.controls input[type=search]{flex:1 1 280px;padding:7px 10px;font-size:15px;border:1px solid var(--line);
border-radius:6px;background:var(--bg);color:var(--fg)}
.controls select{padding:6px 8px;font-size:15px;border:1px solid var(--line);border-radius:6px;background:var(--bg);color:var(--fg)}
#count{color:var(--muted)}
.table{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{border-bottom:1px solid var(--line);padding:6px 10px;text-align:left;vertical-align:top}
th{background:var(--panel);white-space:nowrap}
td.num,th.num,.right{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}\ntable.kv{width:auto}table.kv th{background:none;color:var(--muted);font-weight:normal;padding-left:0}\ncode.sha{word-break:break-all}.center{text-align:center}
th button{all:unset;cursor:pointer;font-weight:600}th button:focus-visible{outline:2px solid var(--accent)}
th[aria-sort=ascending] button::after{content:" \\25B2";font-size:10px}
th[aria-sort=descending] button::after{content:" \\25BC";font-size:10px}
tbody tr:hover{background:var(--panel)}
.tag{display:inline-block;padding:0 7px;border-radius:10px;background:var(--panel);border:1px solid var(--line);
font-size:12px;color:var(--muted)}
.none{color:var(--muted)}
code{font:13px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:var(--code);padding:1px 4px;border-radius:4px}
.code{position:relative;margin:12px 0}
.code pre{background:var(--code);padding:12px 14px;border-radius:6px;overflow-x:auto;margin:0}
.code pre code{padding:0;background:none}
.code .copy{position:absolute;top:6px;right:6px;font-size:12px;padding:3px 9px;border:1px solid var(--line);
border-radius:5px;background:var(--bg);color:var(--fg);cursor:pointer}
.code .lang{position:absolute;top:8px;right:70px;font-size:11px;color:var(--muted)}
.layout{display:grid;grid-template-columns:200px minmax(0,1fr);gap:28px}
nav.toc{position:sticky;top:12px;align-self:start;font-size:14px}
nav.toc ul{list-style:none;padding:0;margin:0}nav.toc li{margin:3px 0}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:0 0 8px}
dl.facts dt{color:var(--muted)}dl.facts dd{margin:0}
h2{border-bottom:1px solid var(--line);padding-bottom:4px;margin-top:30px}
blockquote{margin:0;padding-left:14px;border-left:3px solid var(--line);color:var(--muted)}
footer{padding:16px 28px;color:var(--muted);font-size:13px;border-top:1px solid var(--line)}
@media (max-width:800px){.layout{grid-template-columns:1fr}nav.toc{position:static}}
"""

_COPY_JS = """
(function(){
  function feedback(btn, ok){
    btn.textContent = ok ? "Copied" : "Press Ctrl+C";
    btn.title = ok ? "Copied to the clipboard" : "The code is selected: press Ctrl+C to copy it";
    setTimeout(function(){ btn.textContent = "Copy"; }, 1500);
  }
  function fallback(text, btn){
    var ta = document.createElement("textarea");
    ta.value = text; ta.setAttribute("readonly", ""); ta.style.position = "fixed"; ta.style.opacity = "0";
    document.body.appendChild(ta); ta.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(ta);
    if (!ok) {  // leave the code selected so that Ctrl+C copies it
      var range = document.createRange(); range.selectNodeContents(btn.parentNode.querySelector("code"));
      var sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(range);
    }
    feedback(btn, ok);
  }
  document.querySelectorAll(".code .copy").forEach(function(btn){
    btn.addEventListener("click", function(){
      var text = btn.parentNode.querySelector("code").textContent;
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(function(){ feedback(btn, true); },
                                                 function(){ fallback(text, btn); });
      } else { fallback(text, btn); }
    });
  });
})();
"""

_INDEX_JS = """
(function(){
  var data = JSON.parse(document.getElementById("zoo-index").textContent);
  var byName = {}; data.models.forEach(function(m){ byName[m.name] = m; });
  var tbody = document.querySelector("#models tbody");
  var rows = Array.prototype.slice.call(tbody.rows);
  var search = document.getElementById("search"), task = document.getElementById("task");
  var pretrained = document.getElementById("pretrained"), count = document.getElementById("count");
  var empty = document.getElementById("empty");
  var sortKey = null, sortDir = 1;
  function haystack(m){
    var p = m.paper, parts = [m.name, m.task, m.arch, m.license, p.title, p.authors, p.venue, String(p.year)];
    parts = parts.concat(m.tags);
    if (m.metric) parts.push(m.metric.metric, m.metric.dataset, m.metric.split);
    return parts.join(" ").toLowerCase();
  }
  var hay = {}; data.models.forEach(function(m){ hay[m.name] = haystack(m); });
  function value(m, key){
    if (key === "metric") return m.metric ? [m.metric.metric.toLowerCase(), m.metric.value] : null;
    if (key === "weights") return m.weights;
    if (key === "exportable") return m.exportable ? 1 : 0;
    return m[key];
  }
  function apply(){
    var terms = search.value.toLowerCase().split(/\\s+/).filter(Boolean);
    var shown = 0;
    rows.forEach(function(tr){
      var m = byName[tr.dataset.name];
      var ok = (!task.value || m.task === task.value) && (!pretrained.checked || m.weights !== null) &&
               terms.every(function(t){ return hay[m.name].indexOf(t) >= 0; });
      tr.hidden = !ok; if (ok) shown++;
    });
    count.textContent = shown + " of " + rows.length + " models";
    empty.hidden = shown !== 0;
  }
  function compare(x, y){
    if (Array.isArray(x)) {
      for (var i = 0; i < x.length; i++) { var c = compare(x[i], y[i]); if (c) return c; }
      return 0;
    }
    return x < y ? -1 : x > y ? 1 : 0;
  }
  function sortBy(key){
    sortDir = sortKey === key ? -sortDir : 1; sortKey = key;
    var sorted = rows.slice().sort(function(a, b){
      var x = value(byName[a.dataset.name], key), y = value(byName[b.dataset.name], key);
      if (x === null || x === undefined) return (y === null || y === undefined) ? 0 : 1;
      if (y === null || y === undefined) return -1;
      return compare(x, y) * sortDir;
    });
    sorted.forEach(function(tr){ tbody.appendChild(tr); });
    document.querySelectorAll("#models th").forEach(function(th){
      if (th.dataset.key === key) th.setAttribute("aria-sort", sortDir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    });
  }
  document.querySelectorAll("#models th button").forEach(function(btn){
    btn.addEventListener("click", function(){ sortBy(btn.parentNode.dataset.key); });
  });
  search.addEventListener("input", apply); task.addEventListener("change", apply);
  pretrained.addEventListener("change", apply);
  apply();
})();
"""


def _script_hash(js: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(js.encode()).digest()).decode() + "'"


def _page(title: str, body: str, scripts: list[str], *, data: str | None = None) -> str:
    csp = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; "
           f"script-src {' '.join(_script_hash(js) for js in scripts)}")
    data_tag = f'<script type="application/json" id="zoo-index">{data}</script>\n' if data is not None else ""
    script_tags = "".join(f"<script>{js}</script>\n" for js in scripts)
    return (f'<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<link rel="icon" href="data:,">\n'
            f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n{data_tag}{script_tags}</body>\n</html>\n")


def _json_for_script(obj: Any) -> str:
    """JSON safe inside a <script> element (no ``</script>``, no HTML-significant characters)."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.1f} M" if n >= 1e5 else f"{n:,}"


def _footer() -> str:
    from zoo import __version__
    from zoo.cards.stats import FLOP_CONVENTION

    return (f"<footer>Generated by <code>zoo site build</code> (dynzoo {_esc(__version__)}) from registry.yaml and "
            f"the model cards. Parameters are counted on the meta device; GFLOPs: {_esc(FLOP_CONVENTION)}.</footer>")


# ---- index
_INDEX_HEADERS = (("name", "model", ""), ("task", "task", ""), ("params", "params (M)", "num"),
                  ("gflops", "GFLOPs", "num"), ("weights", "weights", ""), ("metric", "headline metric", ""),
                  ("exportable", "exportable", ""))


def _index_html(rows: list[dict[str, Any]]) -> str:
    from zoo.cards.index import format_row

    tasks = [t for t in TASKS if any(r["task"] == t for r in rows)]
    options = "".join(f'<option value="{_esc(t)}">{_esc(t)}</option>' for t in tasks)
    head = "".join(f'<th data-key="{k}" class="{c}" scope="col"><button type="button">{_esc(label)}</button></th>'
                   for k, label, c in _INDEX_HEADERS)
    body = []
    for r in rows:
        shown = format_row(r)
        m = r["metric"]
        metric = (f'{_esc(m["metric"])} <strong>{m["value"]:g}</strong> <span class="none">'
                  f'({_esc(m["dataset"])} {_esc(m["split"])})</span>') if m else '<span class="none">-</span>'
        weights = f'<span class="tag">{_esc(r["weights"])}</span>' if r["weights"] else '<span class="none">none yet</span>'
        body.append(
            f'<tr data-name="{_esc(r["name"])}">'
            f'<td><a href="models/{_esc(r["name"])}.html">{_esc(r["name"])}</a></td>'
            f'<td>{_esc(r["task"])}</td>'
            f'<td class="num">{shown["params (M)"]}</td>'
            f'<td class="num" title="at input size {_esc("x".join(map(str, r["input_size"])))}">{shown["GFLOPs"]}</td>'
            f"<td>{weights}</td><td>{metric}</td><td>{shown['exportable']}</td></tr>"
        )
    page = f"""<header class="top"><h1>dynzoo model zoo</h1>
<p>Dynamic, deformable and dilated convolution networks for PyTorch: {len(rows)} models.</p></header>
<main>
<div class="controls">
<input id="search" type="search" placeholder="Search models, tasks, papers, datasets" aria-label="Search models">
<select id="task" aria-label="Filter by task"><option value="">all tasks</option>{options}</select>
<label><input type="checkbox" id="pretrained"> has pretrained weights</label>
<span id="count">{len(rows)} models</span>
</div>
<div class="table"><table id="models"><thead><tr>{head}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table></div>
<p id="empty" class="none" hidden>No model matches these filters.</p>
<p class="none">GFLOPs at each model's input size, batch 1; headline metric of the default weights.
Click a column header to sort.</p>
</main>
{_footer()}"""
    data = _json_for_script({"schema": 1, "models": rows})
    return _page("dynzoo model zoo", page, [_INDEX_JS], data=data)


# ---- model pages
def _metrics_html(info: ModelInfo) -> str:
    rows = [(w, m) for w in info.weights.values() for m in w.metrics]
    if not rows:
        return '<p class="none">No published metrics: this entry has no published weights yet.</p>'
    body = "".join(
        f'<tr><td><code>{_esc(w.tag)}</code>{" (default)" if w.tag == info.default_tag else ""}</td>'
        f"<td>{_esc(m.dataset)}</td><td>{_esc(m.split)}</td><td>{_esc(m.metric)}</td>"
        f'<td class="num">{m.value:g}</td><td>{_esc(m.by)}</td><td>{md_inline(m.evidence)}</td></tr>'
        for w, m in rows
    )
    return ('<div class="table"><table id="metrics-table"><thead><tr><th>weights</th><th>dataset</th><th>split</th>'
            '<th>metric</th><th class="num">value</th><th>by</th><th>how / where</th></tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _weights_html(info: ModelInfo) -> str:
    if not info.weights:
        return ('<p>No weights are published for this model yet: <code>pretrained=True</code> raises an error. '
                "Build it with random initialisation, load your own file with <code>checkpoint=</code>, or convert "
                "an official checkpoint with <code>zoo.converters</code>.</p>")
    out = ['<div id="weights-tags">']
    for w in info.weights.values():
        default = " (default)" if w.tag == info.default_tag else ""
        name = info.name if w.tag == info.default_tag else f"{info.name}.{w.tag}"
        rows = [("kind", _esc(w.kind))]
        if w.hub is not None:
            url = f"https://huggingface.co/{w.hub.repo}/tree/{w.hub.revision}"
            rows += [
                ("repo", f'<a href="{_esc(url)}" rel="noopener noreferrer">{_esc(w.hub.repo)}</a>'),
                ("revision", f"<code>{_esc(w.hub.revision)}</code>"),
                ("file", f"<code>{_esc(w.hub.file)}</code> ({w.hub.size:,} bytes)"),
                ("sha256", f'<code class="sha">{_esc(w.hub.sha256)}</code>'),
            ]
        spec = w.upstream or w.manual
        if w.upstream is not None:
            rows.append(("official file", f'<a href="{_esc(w.upstream.url)}" rel="noopener noreferrer">'
                                          f"{_esc(w.upstream.file_name)}</a>"))
        if w.manual is not None:
            rows.append(("download page", f'<a href="{_esc(w.manual.page)}" rel="noopener noreferrer">'
                                          f"{_esc(w.manual.page)}</a> (<code>{_esc(w.manual.file_name)}</code>, "
                                          f"then <code>zoo import {_esc(info.name)}.{_esc(w.tag)} FILE</code>)"))
        if spec is not None:
            rows += [("upstream sha256", f'<code class="sha">{_esc(spec.sha256 or "not published")}</code>'),
                     ("converter", f"<code>{_esc(spec.converter)}</code>")]
            if spec.cited_from:
                rows.append(("cited from", f"<code>{_esc(spec.cited_from)}</code>"))
        if w.warm_start is not None:
            rows.append(("warm start from", f"<code>{_esc(w.warm_start)}</code>"))
        rows += [
            ("source", md_inline(w.source)),
            ("license", _esc(w.license)),
            ("load", f'<code>zoo.create("{_esc(name)}", pretrained=True)</code>'),
        ]
        body = "".join(f'<tr><th scope="row">{k}</th><td>{v}</td></tr>' for k, v in rows)
        out.append(f'<h3 id="weights-{_esc(w.tag)}"><code>{_esc(w.tag)}</code>{default}</h3>'
                   f'<table class="kv weights" data-tag="{_esc(w.tag)}"><tbody>{body}</tbody></table>')
    out.append("</div>")
    return "\n".join(out)


def _card_text(info: ModelInfo) -> str:
    from zoo.cards import card_path

    path = card_path(info)
    if not path.is_file():
        raise RegistryError(f"entry {info.name!r}, field 'card': {path} does not exist; write the card "
                            "(hand-written sections) and run `python scripts/sync_cards.py`")
    return path.read_text(encoding="utf-8")


def _model_html(info: ModelInfo) -> str:
    from zoo.cards.index import fmt_amount
    from zoo.cards.stats import model_stats

    stats = model_stats(info)
    blocks = list(parse_blocks(strip_front_matter(_card_text(info))))
    if blocks and isinstance(blocks[0], Heading) and blocks[0].level == 1:
        blocks = blocks[1:]  # the card's title: the page header shows the name
    # Sections: the card's "## " headings; the Weights section is replaced by the registry's full table.
    sections: list[tuple[str, list[Block]]] = []
    intro: list[Block] = []
    for b in blocks:
        if isinstance(b, Heading) and b.level == 2:
            sections.append((b.text, []))
        elif sections:
            sections[-1][1].append(b)
        else:
            intro.append(b)
    ids: dict[str, int] = {"metrics": 1, "overview": 1}
    parts = [blocks_html(intro, ids=ids)] if intro else []
    toc = ['<li><a href="#overview">Overview</a></li>', '<li><a href="#metrics">Metrics</a></li>']
    if "Weights" not in [title for title, _ in sections]:  # a card without the generated section
        ids["weights"] = 1
        toc.append('<li><a href="#weights">Weights</a></li>')
        parts.append(f'<h2 id="weights">Weights</h2>\n{_weights_html(info)}')
    for title, content in sections:
        slug = slugify(plain_text(parse_inline(title)))
        ids[slug] = ids.get(slug, 0) + 1
        if ids[slug] > 1:
            slug = f"{slug}-{ids[slug]}"
        toc.append(f'<li><a href="#{slug}">{md_inline(title)}</a></li>')
        parts.append(f'<h2 id="{slug}">{md_inline(title)}</h2>')
        parts.append(_weights_html(info) if title == "Weights" else blocks_html(content, ids=ids))
    p = info.paper
    paper = f'<a href="{_esc(p.link)}" rel="noopener noreferrer">{_esc(p.title)}</a>' if p.link else _esc(p.title)
    size = "x".join(map(str, info.input_size))
    facts = [
        ("task", _esc(info.task)), ("architecture", f"<code>{_esc(info.arch)}</code>"),
        ("parameters", f'<span id="params">{_fmt_params(stats.params)}</span> ({stats.params:,})'),
        ("GFLOPs", f'<span id="gflops">{fmt_amount(stats.gflops)}</span> at input size {size}, batch 1 '
                   f"(counted on the {stats.device} device)"),
        ("weights", _esc(info.default_tag) if info.default_tag else '<span class="none">none published yet</span>'),
        ("exportable", "yes (torch.export)" if info.exportable else "no"),
        ("license", _esc(info.license)),
        ("paper", f"{paper}. {_esc(p.authors)}. {_esc(p.venue)}, {p.year}."),
    ]
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    body = f"""<header class="top"><p><a href="../index.html">&larr; all models</a></p><h1>{_esc(info.name)}</h1>
<p>{_esc(info.task)} &middot; {_esc(p.venue)} {p.year} &middot; {_esc(info.license)}</p></header>
<main class="layout">
<nav class="toc" aria-label="Sections"><ul>{''.join(toc)}</ul></nav>
<article>
<h2 id="overview">Overview</h2>
<dl class="facts">{dl}</dl>
<h2 id="metrics">Metrics</h2>
{_metrics_html(info)}
{chr(10).join(parts)}
</article>
</main>
{_footer()}"""
    return _page(f"{info.name} - dynzoo", body, [_COPY_JS])


# ---- build and check
def site_files(infos: Iterable[ModelInfo] | None = None) -> dict[str, str]:
    """Every file of the site (relative path -> text) for ``infos`` (default: the whole registry)."""
    from zoo.cards.index import index_row

    infos = list(default_registry() if infos is None else infos)
    missing = [i.name for i in infos if not _card_exists(i)]
    if missing:
        raise RegistryError(f"no model card for {', '.join(missing)}: write model_cards/<name>.md "
                            "(see CONTRIBUTING.md) and run `python scripts/sync_cards.py`")
    rows = [index_row(i) for i in infos]
    files = {"index.html": _index_html(rows)}
    for info in infos:
        files[f"models/{info.name}.html"] = _model_html(info)
    return files


def _card_exists(info: ModelInfo) -> bool:
    from zoo.cards import card_path

    return card_path(info).is_file()


SITE_MARKER = ".dynzoo-site"
_MARKER_VERSION = "dynzoo-site 1"
_SITE_FILE = re.compile(r"^(index\.html|models/[A-Za-z0-9][A-Za-z0-9._-]*\.html)$")


def _read_manifest(outdir: Path) -> set[str] | None:
    """The files an earlier build of ``outdir`` wrote (from its marker); None when it has no marker."""
    marker = outdir / SITE_MARKER
    if not os.path.lexists(marker):
        return None
    redo = f"move {outdir}'s files away (or choose a new or empty directory) and run `zoo site build` again"
    try:
        lines = marker.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SiteError(f"cannot read the site marker {marker} ({exc}); {redo}") from None
    if not lines or lines[0] != _MARKER_VERSION:
        first = lines[0] if lines else ""
        raise SiteError(f"{marker}: first line is {first!r}, expected {_MARKER_VERSION!r} (a marker of another "
                        f"version of zoo, or not zoo's); {redo}")
    files = set()
    for number, line in enumerate(lines[1:], start=2):
        if not line or line.startswith("#"):
            continue
        if not _SITE_FILE.match(line):
            raise SiteError(f"{marker}, line {number}: {line!r} is not a file of the site; {redo}")
        files.add(line)
    return files


def _owned_files(outdir: Path) -> set[str]:
    """The files ``build_site`` may replace or remove in ``outdir``; raises unless the directory is new,
    empty, or marked by an earlier build."""
    if not os.path.lexists(outdir):
        return set()
    if not outdir.is_dir():
        raise SiteError(f"{outdir} exists and is not a directory; give `zoo site build` a new or empty directory")
    files = _read_manifest(outdir)
    if files is not None:
        return files
    try:
        empty = next(os.scandir(outdir), None) is None
    except OSError as exc:
        raise SiteError(f"cannot list {outdir}: {exc.strerror}") from None
    if not empty:
        raise SiteError(f"{outdir} is not empty and was not written by `zoo site build` (it has no {SITE_MARKER} "
                        "file); the site is only written into a new or empty directory, or one an earlier build "
                        "wrote: choose a new directory, or move the files in this one away")
    return set()


def _write_atomic(path: Path, text: str) -> None:
    """Write ``path`` through a temporary file in its directory and ``os.replace``: never half-written."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_marker(outdir: Path, files: Iterable[str]) -> None:
    lines = [_MARKER_VERSION, "# written by `zoo site build`: the files it wrote, the only ones it replaces or removes",
             *sorted(files)]
    _write_atomic(outdir / SITE_MARKER, "\n".join(lines) + "\n")


def build_site(outdir: str | Path, infos: Iterable[ModelInfo] | None = None) -> list[Path]:
    """Write the site to ``outdir``: a new or empty directory, or one an earlier build wrote (see
    :data:`SITE_MARKER`). Pages of entries no longer in the registry are removed if the earlier build
    wrote them; files it did not write are never replaced or removed."""
    outdir = Path(outdir)
    files = site_files(infos)
    unsafe = [rel for rel in files if not _SITE_FILE.match(rel)]
    if unsafe:
        raise RegistryError(f"{', '.join(unsafe)}: not a safe file name for a page; model names are lowercase "
                            "letters, digits and '-'")
    owned = _owned_files(outdir)
    clashes = sorted(rel for rel in files if rel not in owned and os.path.lexists(outdir / rel))
    if clashes:
        raise SiteError(f"{outdir}: files that `zoo site build` did not write are in the way: {', '.join(clashes)} "
                        f"(its {SITE_MARKER} file does not list them); move them away and build again")
    written = []
    try:
        (outdir / "models").mkdir(parents=True, exist_ok=True)
        _write_marker(outdir, owned | set(files))  # first: an interrupted build still knows its files
        for rel, text in files.items():
            path = outdir / rel
            _write_atomic(path, text)
            written.append(path)
        for rel in sorted(owned - set(files)):
            path = outdir / rel
            if path.is_symlink() or path.is_file():
                path.unlink()
        _write_marker(outdir, files)
    except OSError as exc:
        raise SiteError(f"cannot write the site to {outdir}: {exc}") from None
    return written


def site_problems(outdir: str | Path, infos: Iterable[ModelInfo] | None = None) -> list[str]:
    """Why the site in ``outdir`` differs from what the registry, cards and stats give now (empty: current)."""
    outdir = Path(outdir)
    files = site_files(infos)
    rebuild = f" (rebuild with `zoo site build {outdir}`)"
    out = []
    for rel, text in files.items():
        path = outdir / rel
        if not path.is_file():
            out.append(f"{rel}: missing{rebuild}")
        elif path.read_text(encoding="utf-8") != text:
            out.append(f"{rel}: stale{rebuild}")
    try:
        owned = _owned_files(outdir)
    except SiteError as exc:
        return [*out, str(exc)]
    for path in sorted((outdir / "models").glob("*.html")) if (outdir / "models").is_dir() else []:
        rel = f"models/{path.name}"
        if rel not in files:
            out.append(f"{rel}: no such registry entry{rebuild}" if rel in owned else
                       f"{rel}: no such registry entry, and not written by `zoo site build`: remove it")
    return out
