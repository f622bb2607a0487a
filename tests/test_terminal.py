"""zoo.cards.terminal: model cards laid out for a terminal, `zoo card` and `zoo list`."""
from __future__ import annotations

import copy
import io
import re
import string

import pytest

import zoo
import zoo.cards as C
import zoo.cards.stats
from conftest import SMALL_ENTRY
from zoo.cards.index import INDEX_COLUMNS
from zoo.cards.terminal import render_markdown, use_colour
from zoo.cli import main
from zoo.registry import default_registry, parse_entry

ANSI = re.compile(r"\x1b\[[0-9;]*m")
HAND = {
    "Summary": "A **small** network with a [paper link](https://arxiv.org/abs/1706.05587) and `inline code`; this "
               "sentence is long enough that it has to be wrapped at the width the test asks for.",
    "Architecture": "- stem conv\n- ASPP with rates 1, 2, 3\n  - image pooling branch\n1. numbered\n2. list",
    "Limitations": "None that the tests know of, but the card needs fifteen words in every hand-written section anyway.",
}
METRICS = [{"dataset": "VOC2012", "split": "val", "metric": "mIoU", "value": 71.3, "measured": "`python eval.py`"}]


@pytest.fixture
def card(user_registry, tmp_path, monkeypatch):
    """A user entry with weights and metrics, its card in a temporary cards dir; returns the card text."""
    entry = {**copy.deepcopy(SMALL_ENTRY), "card": "test-term.md", "weights": {"default": "voc", "tags": {"voc": {
        "hub": {"repo": "zoo-test/term", "revision": "a" * 40, "file": "model.safetensors", "sha256": "b" * 64,
                "size": 1234}, "source": "made for the terminal tests", "license": "apache-2.0", "metrics": METRICS}}}}
    info = parse_entry("test-term", entry, "tests/test_terminal.py")
    default_registry().add(info)
    monkeypatch.setattr(C, "cards_dir", lambda: tmp_path)
    text = C.render_card(info, HAND)
    (tmp_path / info.card).write_text(text)
    return text


def test_headings_paragraphs_lists_and_code(card):
    out = render_markdown(card, width=60, colour=False, boxes=True)
    lines = out.splitlines()
    assert not ANSI.search(out)
    assert "license:" not in out and "library_name" not in out and "<!--" not in out  # front matter, comments
    assert lines[0].strip() == "test-term" and "Summary" in lines and "Weights" in lines
    assert all(len(line) <= 60 for line in lines if not line.startswith("    "))  # code is never wrapped
    assert max(len(line) for line in lines) > 60  # ... even where it is wider than the terminal
    assert "paper link\n(https://arxiv.org/abs/1706.05587) and inline code;" in out  # wrapped, no backticks
    assert " • stem conv\n • ASPP with rates 1, 2, 3\n    • image pooling branch" in out
    assert " 1 numbered\n 2 list" in out
    assert '    model = zoo.create("test-term", pretrained=True)' in lines
    assert "    @article{chen2017rethinking," in lines


def test_raw_html_is_text_and_unsafe_links_lose_their_target():
    out = render_markdown("x <b>y</b> [z](javascript:alert(1)) <https://e.org> [w](https://w.org)\n\n<!-- c -->\n",
                          width=80, colour=False)
    assert out == "x <b>y</b> z https://e.org w (https://w.org)\n"  # the parser of the site (zoo.cards.markdown)


def test_tables_are_aligned_and_fold_to_the_width(card):
    out = render_markdown(card, width=100, colour=False, boxes=True)
    lines = out.splitlines()
    header = next(line for line in lines if line.split()[:1] == ["tag"])
    assert re.fullmatch(r" tag\s+dataset\s+split\s+metric\s+value\s+by\s+how / where", header)
    row = next(line for line in lines if "VOC2012" in line)
    assert re.fullmatch(r" voc\s+VOC2012\s+val\s+mIoU\s+71\.3\s+measured\s+python eval\.py", row)
    assert [header.index(h) for h in ("dataset", "split", "by")] == [row.index(v) for v in ("VOC2012", "val", "measured")]
    # a table of 8 columns with hashes does not fit 60 columns: long words fold onto the next lines, none is cut
    wide = ("| tag | repo | revision | file | size | sha256 | source | license |\n|---|---|---|---|---|---|---|---|\n"
            f"| voc (default) | zoo-test/term | {'a' * 12} | model.safetensors | 1,234 B | {'b' * 16} | "
            "made for the terminal tests | apache-2.0 |\n")
    folded = render_markdown(wide, width=60, colour=False, boxes=True)
    assert all(len(line) <= 60 for line in folded.splitlines()) and "…" not in folded
    assert sorted(re.sub(r"[\s─-]", "", folded)) == sorted(re.sub(r"[\s|-]", "", wide))  # every character shown
    narrow = render_markdown("| a | b |\n|---|---|\n| " + "word " * 30 + "| x |\n", width=40, colour=False)
    assert all(len(line) <= 40 for line in narrow.splitlines())
    assert len(narrow.splitlines()) > 3  # the long cell was wrapped onto several lines


def test_colour_and_ascii_fallback(card):
    coloured = render_markdown(card, width=80, colour=True)
    assert "\x1b[1;4mtest-term\x1b[0m" in coloured  # title
    assert re.search(r"\x1b\[[0-9;]*mpython eval\.py\x1b\[0m", coloured)  # inline code in a table cell
    assert "\x1b[1msmall\x1b[0m" in coloured  # bold
    assert ANSI.sub("", coloured) == render_markdown(card, width=80, colour=False)
    ascii_only = render_markdown(card, width=80, colour=False, boxes=False)
    assert set(ascii_only) - set(string.printable) <= {"…"}  # "…" is card text (abbreviated sha256)
    assert "\n ------" in ascii_only and " * stem conv" in ascii_only and "dataset" in ascii_only


def test_colour_only_on_a_tty(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert use_colour(Tty()) and not use_colour(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_colour(Tty())


def test_cli_card_renders_and_markdown_flag_prints_the_source(card, capsys):
    assert main(["card", "test-term", "--width", "70"]) == 0
    out = capsys.readouterr().out
    assert not ANSI.search(out)  # captured stdout is not a tty
    assert out.splitlines()[0].strip() == "test-term" and "\nWeights\n" in out and "library_name" not in out
    assert main(["card", "test-term", "--markdown"]) == 0
    assert capsys.readouterr().out == card


def _header_and_rows(out: str) -> tuple[list[str], list[str]]:
    """The header lines (a narrow terminal wraps headers) and the rows of `zoo list`, split at the rule."""
    lines = out.splitlines()
    rule = next(i for i, line in enumerate(lines) if line and set(line) == {"─"})
    return lines[:rule], lines[rule + 1:]


def test_cli_list_has_the_site_index_columns_and_sorts(card, capsys):
    assert main(["list", "test-*", "--wide"]) == 0
    header, body = _header_and_rows(capsys.readouterr().out)
    assert len(header) == 1 and re.split(r"\s{2,}", header[0]) == list(INDEX_COLUMNS)
    rows = {line.split()[0]: line for line in body}
    assert set(rows) == {"test-small-segnet", "test-term"}
    assert "mIoU 71.3 (VOC2012 val; measured)" in rows["test-term"] and "voc" in rows["test-term"]
    params = zoo.cards.stats.model_stats(zoo.model_info("test-term")).params
    assert f"{params / 1e6:.3g}" in rows["test-term"]
    assert main(["list", "--sort", "metric"]) == 0
    names = [line.split()[0] for line in _header_and_rows(capsys.readouterr().out)[1]]
    with_metric = {i.name for i in default_registry() if any(w.metrics for w in i.weights.values())}
    assert "test-term" in with_metric and set(names[:len(with_metric)]) == with_metric  # entries with a metric first
    assert main(["list", "--sort", "gflops", "--reverse", "test-*"]) == 0


def test_cli_list_fits_80_columns_and_wide_shows_every_cell(card, capsys, monkeypatch):
    from zoo.cards.index import format_row, index_row

    monkeypatch.setenv("COLUMNS", "80")
    metrics = {format_row(index_row(i))["headline metric"] for i in default_registry()}
    longest = max(metrics, key=len)
    assert len(longest) > 40
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert not ANSI.search(out) and max(len(line) for line in out.splitlines()) <= 80
    assert "…" in out and longest not in out  # long cells are cut
    assert [line.split()[0] for line in _header_and_rows(out)[1]] == zoo.list_models()  # names never are
    assert main(["list", "--wide"]) == 0
    wide = capsys.readouterr().out
    assert "…" not in wide and all(m in wide for m in metrics) and max(len(line) for line in wide.splitlines()) > 80
