"""The Markdown of the model cards, parsed one way for every view: markdown-it-py, CommonMark with GFM tables.

:func:`parser` is the configuration the site and the terminal share (:mod:`zoo.cards.site`,
:mod:`zoo.cards.terminal`):

- CommonMark plus pipe tables (a ``|`` inside a cell, even in a code span, is written ``\\|``);
- raw HTML is not HTML (``html=False``): a ``<script>`` in a card is text, shown and escaped as such;
- HTML comments on lines of their own (the cards' "generated from registry.yaml" notes) are dropped;
- images are not parsed (``![alt](url)`` is a ``!`` and a link): the site loads nothing from elsewhere;
- every link is parsed, then a link whose target is not http(s), mailto or relative (``javascript:``,
  ``data:``, ``vbscript:`` ...) loses its target and keeps its text (:func:`safe_href`); a link to
  http(s) gets ``rel="noopener noreferrer"``.

:func:`markdown_to_html` renders with the site's rules on top of markdown-it's HTML renderer: headings
get unique ``id`` slugs, table alignment is a class (``class="right"``), tables sit in a scrolling
``<div class="table">``, and every code block has a copy button (:func:`code_block_html`).
"""
from __future__ import annotations

import functools
import html
import re
from collections.abc import Sequence
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from markdown_it.token import Token

_SAFE_SCHEMES = ("http", "https", "mailto")
_COMMENT_LINE = re.compile(r"^\s*<!--.*?-->\s*$")
_FRONT_MATTER = re.compile(r"^---\n.*?\n---\n", flags=re.S)


def safe_href(url: str) -> str | None:
    """``url`` when it is http(s), mailto or relative; None for anything else (``javascript:``, ``data:``)."""
    cleaned = re.sub(r"[\x00-\x20\x7f]", "", url)
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):", cleaned)
    if m and m.group(1).lower() not in _SAFE_SCHEMES:
        return None
    return url


def strip_front_matter(text: str) -> str:
    """The card without its YAML front matter."""
    m = _FRONT_MATTER.match(text)
    return text[m.end():] if m else text


def _drop_comment_lines(state: StateCore) -> None:
    """Remove paragraph lines that are HTML comments, and paragraphs left empty (before inline parsing)."""
    tokens, kept = state.tokens, []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.type == "paragraph_open" and i + 2 < len(tokens) and tokens[i + 1].type == "inline":
            inline = tokens[i + 1]
            lines = [line for line in inline.content.split("\n") if not _COMMENT_LINE.match(line)]
            if not lines:
                i += 3  # paragraph_open, inline, paragraph_close
                continue
            inline.content = "\n".join(lines)
        kept.append(token)
        i += 1
    state.tokens = kept


def _safe_links(state: StateCore) -> None:
    """Unwrap links with an unsafe target (their text stays); mark links to other sites noopener."""
    for block in state.tokens:
        if block.type != "inline" or not block.children:
            continue
        children, dropped = [], False
        for token in block.children:
            if token.type == "link_open":
                href = safe_href(str(token.attrGet("href") or ""))
                if href is None:
                    dropped = True
                    continue
                if re.match(r"^https?:", href, flags=re.I):
                    token.attrSet("rel", "noopener noreferrer")
            elif token.type == "link_close" and dropped:  # links do not nest
                dropped = False
                continue
            children.append(token)
        block.children = children


def parser() -> MarkdownIt:
    """A new card parser (see the module docstring): the site adds its HTML rules to one of its own."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table").disable("image")
    md.validateLink = lambda url: True  # parse every link; _safe_links decides which keep their target
    md.core.ruler.before("inline", "zoo_drop_comment_lines", _drop_comment_lines)
    md.core.ruler.push("zoo_safe_links", _safe_links)
    return md


# ------------------------------------------------------------------------------------ HTML
def esc(s: str) -> str:
    """``s`` escaped for HTML text and attribute values."""
    return html.escape(s, quote=True)


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def unique_slug(text: str, ids: dict[str, int]) -> str:
    """The slug of ``text``, numbered (``-2``, ``-3``) when ``ids`` (shared by a page) has it already."""
    slug = slugify(text)
    ids[slug] = ids.get(slug, 0) + 1
    return slug if ids[slug] == 1 else f"{slug}-{ids[slug]}"


def plain_text(inline: Token) -> str:
    """The text of an inline token without markup."""
    return "".join(" " if t.type == "softbreak" else t.content for t in inline.children or []
                   if t.type in ("text", "code_inline", "softbreak"))


def code_block_html(text: str, lang: str = "") -> str:
    cls = f' class="language-{esc(lang)}"' if lang else ""
    label = f'<span class="lang">{esc(lang)}</span>' if lang else ""
    return (f'<div class="code">{label}<button type="button" class="copy" aria-label="Copy code">Copy</button>'
            f"<pre><code{cls}>{esc(text)}</code></pre></div>")


def _heading_open(self, tokens: Sequence[Token], idx: int, options: Any, env: dict) -> str:
    slug = unique_slug(plain_text(tokens[idx + 1]), env.setdefault("ids", {}))
    return f'<{tokens[idx].tag} id="{slug}">'


def _code(self, tokens: Sequence[Token], idx: int, options: Any, env: dict) -> str:
    token = tokens[idx]
    lang = token.info.split()[0] if token.info.strip() else ""
    return code_block_html(token.content.removesuffix("\n"), lang) + "\n"


def _cell_open(self, tokens: Sequence[Token], idx: int, options: Any, env: dict) -> str:
    token = tokens[idx]
    align = str(token.attrGet("style") or "").removeprefix("text-align:")
    return f'<{token.tag} class="{esc(align)}">' if align else f"<{token.tag}>"


@functools.cache
def _html() -> MarkdownIt:
    md = parser()
    md.add_render_rule("heading_open", _heading_open)
    md.add_render_rule("fence", _code)
    md.add_render_rule("code_block", _code)
    md.add_render_rule("th_open", _cell_open)
    md.add_render_rule("td_open", _cell_open)
    md.add_render_rule("table_open", lambda *_: '<div class="table"><table>\n')
    md.add_render_rule("table_close", lambda *_: "</table></div>\n")
    return md


def markdown_to_html(text: str, ids: dict[str, int] | None = None) -> str:
    """Card Markdown -> safe HTML; heading ids are unique among ``ids`` (which this call extends)."""
    return _html().render(text, {"ids": {} if ids is None else ids})


def tokens_to_html(tokens: list[Token], ids: dict[str, int]) -> str:
    md = _html()
    return md.renderer.render(tokens, md.options, {"ids": ids})


def md_inline(text: str) -> str:
    """Inline Markdown (a table cell, a title) -> safe HTML."""
    return _html().renderInline(text)


def inline_html(inline: Token) -> str:
    md = _html()
    return md.renderer.renderInline(inline.children or [], md.options, {})


def card_sections(text: str) -> tuple[list[Token], list[tuple[Token, list[Token]]]]:
    """A card's blocks before its first ``## `` heading, then (title, blocks) per ``## `` section; the
    front matter and the ``# `` title are left out."""
    tokens = _html().parse(strip_front_matter(text), {})
    if tokens and tokens[0].type == "heading_open" and tokens[0].tag == "h1":
        tokens = tokens[3:]  # heading_open, inline, heading_close
    intro: list[Token] = []
    sections: list[tuple[Token, list[Token]]] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.type == "heading_open" and token.tag == "h2" and token.level == 0:
            sections.append((tokens[i + 1], []))
            i += 3
            continue
        (sections[-1][1] if sections else intro).append(token)
        i += 1
    return intro, sections
