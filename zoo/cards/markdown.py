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
"""
from __future__ import annotations

import re

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore

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
