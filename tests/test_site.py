"""The static site (zoo.cards.site): Markdown subset, generated pages, staleness, the output directory. The
built site in headless Chromium: tests/test_site_browser.py; the registry both use: tests/support/site_entries.py.
"""
from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zoo.cards as C
from conftest import SMALL_ENTRY
from support.site_entries import HAND, REVISION, SHA, hub_weights, index_data
from zoo.cards.index import INDEX_COLUMNS
from zoo.cards.markdown import markdown_to_html
from zoo.cards.site import SITE_MARKER, build_site, site_files, site_problems
from zoo.cli import main
from zoo.errors import RegistryError, SiteError
from zoo.registry import default_registry, parse_entry


# ---------------------------------------------------------------------------------- Markdown subset
def test_markdown_subset_renders_to_html():
    md = ("# Title\n\nText with `a | b`, **bold `x`**, *em* and [a link](https://e.org/?a=1&b=2).\n\n"
          "- one\n  continued\n- two\n  - nested\n\n1. first\n2. second\n\n"
          "| a | b |\n|---|--:|\n| `x\\|y` | **2** |\n\n```python\nprint('<hi>')\n```\n\n> quoted\n")
    out = markdown_to_html(md)
    assert '<h1 id="title">Title</h1>' in out
    assert "<code>a | b</code>" in out and "<strong>bold <code>x</code></strong>" in out and "<em>em</em>" in out
    assert '<a href="https://e.org/?a=1&amp;b=2" rel="noopener noreferrer">a link</a>' in out
    assert "<ul>\n<li>one\ncontinued</li>\n<li>two\n<ul>\n<li>nested</li>\n</ul>\n</li>\n</ul>" in out
    assert "<ol>\n<li>first</li>\n<li>second</li>\n</ol>" in out
    assert '<th>a</th>\n<th class="right">b</th>' in out and "<td><code>x|y</code></td>" in out
    assert '<code class="language-python">print(&#x27;&lt;hi&gt;&#x27;)</code>' in out and 'class="copy"' in out
    assert "<blockquote>\n<p>quoted</p>\n</blockquote>" in out


def test_markdown_is_escaped_and_unsafe_links_are_dropped():
    out = markdown_to_html('<script>alert(1)</script> [x](javascript:alert(1)) [y]( data:text/html,hi) '
                           '<img src=x onerror=alert(1)>\n\n<!-- a comment -->\n\n[ok](../index.html)')
    assert "<script" not in out and "<img" not in out and "javascript:" not in out and "data:" not in out
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out and "comment" not in out
    assert '<a href="../index.html">ok</a>' in out


# ---------------------------------------------------------------------------------- generated files

def test_index_embeds_every_entry_with_computed_stats(site_entries):
    files = site_files(site_entries)
    data = index_data(files["index.html"])
    rows = {r["name"]: r for r in data["models"]}
    assert list(rows) == [i.name for i in site_entries]
    cls = rows["test-tiny-classifier"]
    assert cls["params"] == 3 * 8 * 9 + 8 + 8 * 10 + 10  # counted from the model, not typed by hand
    assert cls["flops"] == 2 * 8 * 32 * 32 * 27 + 2 * 8 * 10 and cls["gflops"] == cls["flops"] / 1e9
    assert cls["metric"] == {"metric": "top-1", "value": 55.5, "dataset": "ImageNet-1k", "split": "val",
                             "by": "measured", "lower_is_better": False}
    assert rows["test-small-segnet-voc"]["metric"]["value"] == 71.3 and rows["test-small-segnet"]["metric"] is None
    headers = re.findall(r'<th data-key="\w+"[^>]*><button type="button">([^<]+)</button>', files["index.html"])
    assert tuple(headers) == INDEX_COLUMNS  # `zoo list` prints the same columns


def test_model_page_has_metrics_weights_citation_and_usage(site_entries):
    page = site_files(site_entries)["models/test-small-segnet-voc.html"]
    metrics = re.search(r'<table id="metrics-table">.*?</table>', page, flags=re.S).group(0)
    assert "<td>mIoU</td><td class=\"num\">71.3</td>" in metrics and "93.1" in metrics and "12.5" in metrics
    weights = re.search(r'<div id="weights-tags">.*?</div>', page, flags=re.S).group(0)
    assert REVISION in weights and SHA in weights and "f" * 40 in weights
    assert f"https://huggingface.co/zoo-test/site-model/tree/{REVISION}" in weights
    assert "@article{chen2017rethinking," in page
    assert "zoo.create(&quot;test-small-segnet-voc&quot;, pretrained=True)" in page
    assert page.count('class="copy"') >= 2  # BibTeX and usage
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    assert "<li>ASPP (v3) with rates 1, 2, 3\n<ul>\n<li>image pooling branch</li>\n</ul>\n</li>" in page
    assert "0123456789ab</code>" not in page  # the card's abbreviated weights table is replaced by the full one


def test_pages_are_self_contained_with_a_csp_that_pins_the_scripts(site_entries):
    for rel, text in site_files(site_entries).items():
        assert not re.search(r"<(script|img|iframe)[^>]+src=|<link[^>]+stylesheet|@import|fetch\(|XMLHttpRequest", text), rel
        ids = re.findall(r' id="([^"]+)"', text)
        assert len(ids) == len(set(ids)), f"{rel}: duplicate element ids"
        csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', text).group(1)
        assert "default-src 'none'" in csp
        for js in re.findall(r"<script>(.*?)</script>", text, flags=re.S):
            digest = base64.b64encode(hashlib.sha256(js.encode()).digest()).decode()
            assert f"'sha256-{digest}'" in csp, rel


def test_json_in_the_page_cannot_close_its_script_tag():
    import zoo.cards.pages as pages

    text = pages._json_for_script({"x": "</script><script>alert(1)</script>&"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"x": "</script><script>alert(1)</script>&"}


def test_a_missing_card_is_an_error_naming_the_entry(site_entries):
    (C.cards_dir() / "test-tiny-classifier.md").unlink()
    with pytest.raises(RegistryError, match="no model card for test-tiny-classifier"):
        site_files(site_entries)


# ---------------------------------------------------------------------------------- staleness
def test_site_is_current_then_stale_when_the_registry_changes(site_entries, tmp_path):
    out = tmp_path / "site"
    build_site(out, site_entries)
    assert site_problems(out, site_entries) == []
    changed = parse_entry("test-tiny-classifier", {**copy.deepcopy(SMALL_ENTRY), "task": "image-classification",
                                                    "arch": "test_tiny_classifier", "args": {"num_classes": 10},
                                                    "classifier": ["fc"], "input_size": [3, 32, 32],
                                                    "card": "test-tiny-classifier.md",
                                                    "weights": hub_weights("in1k", [("ImageNet-1k", "val", "top-1", 56.0)])})
    infos = [*site_entries[:2], changed]
    (C.cards_dir() / changed.card).write_text(C.render_card(changed, HAND))
    problems = site_problems(out, infos)
    assert any(p.startswith("index.html: stale") for p in problems)
    assert any(p.startswith("models/test-tiny-classifier.html: stale") for p in problems)
    assert all("zoo site build" in p for p in problems)
    assert site_problems(out, site_entries[:2]) == [
        f"index.html: stale (rebuild with `zoo site build {out}`)",
        f"models/test-tiny-classifier.html: no such registry entry (rebuild with `zoo site build {out}`)",
    ]
    build_site(out, site_entries[:2])
    assert not (out / "models" / "test-tiny-classifier.html").exists()
    assert site_problems(out, site_entries[:2]) == []


def test_cli_site_build_and_check(site_entries, tmp_path, capsys):
    out = tmp_path / "site"
    assert main(["site", "check", str(out)]) == 1 and "index.html: missing" in capsys.readouterr().out
    assert main(["site", "build", str(out)]) == 0
    assert f"open {out / 'index.html'}" in capsys.readouterr().out
    assert {p.name for p in (out / "models").iterdir()} == {f"{i.name}.html" for i in default_registry()}
    assert main(["site", "check", str(out)]) == 0
    page = out / "models" / "test-small-segnet.html"
    page.write_text(page.read_text().replace("Summary", "Summery"))
    assert main(["site", "check", str(out)]) == 1 and "models/test-small-segnet.html: stale" in capsys.readouterr().out


def test_site_of_the_shipped_registry_builds_and_is_current(tmp_path):
    """Every shipped entry has a card (else RegistryError names it) and a page; the index lists them all."""
    out = tmp_path / "site"
    build_site(out)
    assert site_problems(out) == []
    names = [r["name"] for r in index_data((out / "index.html").read_text())["models"]]
    assert names == [i.name for i in default_registry()]
    assert sorted(p.stem for p in (out / "models").glob("*.html")) == sorted(names)


# ---------------------------------------------------------------------------------- output directory
def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_build_refuses_a_directory_it_did_not_write(site_entries, tmp_path, capsys):
    out = tmp_path / "site"
    (out / "models").mkdir(parents=True)
    (out / "notes.html").write_text("mine")
    (out / "models" / "test-small-segnet.html").write_text("also mine")
    before = _tree(out)
    with pytest.raises(SiteError, match="not written by `zoo site build`") as err:
        build_site(out, site_entries)
    assert str(out) in str(err.value) and "new directory" in str(err.value)
    assert main(["site", "build", str(out)]) == 2 and str(out) in capsys.readouterr().err
    assert _tree(out) == before
    assert any("not written by `zoo site build`" in p for p in site_problems(out, site_entries))
    (tmp_path / "file").write_text("x")
    with pytest.raises(SiteError, match="not a directory"):
        build_site(tmp_path / "file", site_entries)
    empty = tmp_path / "empty"
    empty.mkdir()
    build_site(empty, site_entries)
    assert (empty / SITE_MARKER).read_text().splitlines()[0] == "dynzoo-site 1"


def test_rebuild_replaces_and_removes_only_the_files_it_wrote(site_entries, tmp_path):
    out = tmp_path / "site"
    build_site(out, site_entries)
    (out / "notes.txt").write_text("mine")
    (out / "models" / "mine.html").write_text("mine")
    build_site(out, site_entries[:2])  # test-tiny-classifier's page is stale: removed, it was ours
    assert not (out / "models" / "test-tiny-classifier.html").exists()
    assert (out / "notes.txt").read_text() == "mine" and (out / "models" / "mine.html").read_text() == "mine"
    assert site_problems(out, site_entries[:2]) == [
        "models/mine.html: no such registry entry, and not written by `zoo site build`: remove it"]
    # a file of the user's where a new page would go: refused before anything is written
    (out / "models" / "test-tiny-classifier.html").write_text("mine too")
    before = _tree(out)
    with pytest.raises(SiteError, match="did not write are in the way: models/test-tiny-classifier.html"):
        build_site(out, site_entries)
    assert _tree(out) == before
    (out / "models" / "test-tiny-classifier.html").unlink()
    build_site(out, site_entries)
    assert site_problems(out, site_entries) == ["models/mine.html: no such registry entry, and not written by "
                                                "`zoo site build`: remove it"]


@pytest.mark.parametrize("marker,match", [
    ("dynzoo-site 99\nindex.html\n", "expected 'dynzoo-site 1'"),
    ("", "expected 'dynzoo-site 1'"),
    ("dynzoo-site 1\nindex.html\n../outside.html\n", r"line 3: '../outside.html' is not a file of the site"),
    ("dynzoo-site 1\n/etc/passwd\n", "line 2"),
])
def test_a_marker_that_is_not_ours_is_refused(site_entries, tmp_path, marker, match):
    out = tmp_path / "site"
    out.mkdir()
    (out / SITE_MARKER).write_text(marker)
    (tmp_path / "outside.html").write_text("keep")
    before = _tree(tmp_path)
    with pytest.raises(SiteError, match=match) as err:
        build_site(out, site_entries)
    assert str(out / SITE_MARKER) in str(err.value)
    assert _tree(tmp_path) == before


def test_site_files_are_written_atomically(site_entries, tmp_path, monkeypatch):
    import zoo.cards.site as site

    out = tmp_path / "site"
    build_site(out, site_entries[:2])
    before = _tree(out)
    expected = {**site_files(site_entries), SITE_MARKER: None}
    real_replace, replaced = os.replace, []

    def replace(src, dst):
        src, dst = Path(src), Path(dst)
        assert src.parent == dst.parent and src.name.startswith(".") and src.name.endswith(".tmp")
        rel = dst.relative_to(out).as_posix()
        assert expected[rel] is None or src.read_text() == expected[rel]  # complete before it takes the name
        replaced.append(rel)
        if rel == "models/test-tiny-classifier.html":
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(site.os, "replace", replace)
    with pytest.raises(SiteError, match=f"cannot write the site to {re.escape(str(out))}.*No space left"):
        build_site(out, site_entries)
    after = _tree(out)
    assert not [p for p in out.rglob("*.tmp")]
    assert after.keys() == before.keys()  # the failed page was never created, nothing was removed
    assert after["index.html"] == site_files(site_entries)["index.html"].encode()  # whole pages only
    assert "models/test-tiny-classifier.html" in after[SITE_MARKER].decode()  # the next build may replace it
    monkeypatch.setattr(site.os, "replace", real_replace)
    build_site(out, site_entries)
    assert site_problems(out, site_entries) == []


PARTS = ["index.html", "models", SITE_MARKER, "a.html", "b.html", "c.html", "notes.txt", ".hidden"]
MARKER_LINES = ["dynzoo-site 1", "dynzoo-site 2", "# comment", "", "index.html", "models/a.html", "models/b.html",
                "notes.txt", "../outside.html", "/abs.html", "models/../../outside.html", "models"]
user_files = st.lists(st.tuples(st.lists(st.sampled_from(PARTS), min_size=1, max_size=3), st.binary(max_size=6)),
                      max_size=8)
markers = st.none() | st.lists(st.sampled_from(MARKER_LINES), max_size=6).map("\n".join) | st.binary(max_size=12)
page_sets = st.sets(st.sampled_from(["a", "b", "c"]))


def _populate(root: Path, files: list[tuple[list[str], bytes]], marker: str | bytes | None) -> None:
    for parts, data in files:
        path = root.joinpath(*parts)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        except OSError:  # a file where a directory would go, or the reverse
            pass
    if marker is not None and not (root / SITE_MARKER).is_dir():
        (root / SITE_MARKER).write_bytes(marker.encode() if isinstance(marker, str) else marker)


def _licensed(root: Path) -> set[str]:
    """The files a marker in ``root`` lets the build replace or remove (none unless it is valid)."""
    try:
        lines = (root / SITE_MARKER).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return set()
    if not lines or lines[0] != "dynzoo-site 1":
        return set()
    listed = {line for line in lines[1:] if line and not line.startswith("#")}
    if not all(re.fullmatch(r"index\.html|models/[a-c]\.html", line) for line in listed):
        return set()
    return listed | {SITE_MARKER}


@settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=st.none() | page_sets, files=user_files, marker=markers, second=page_sets)
def test_fuzz_builds_never_touch_files_they_did_not_write(monkeypatch, first, files, marker, second):
    import zoo.cards.site as site

    monkeypatch.setattr(site, "site_files", lambda names: {"index.html": f"index of {sorted(names)}",
                                                            **{f"models/{n}.html": f"page {n}" for n in sorted(names)}})
    with tempfile.TemporaryDirectory() as tmp:
        out, outside = Path(tmp) / "site", Path(tmp) / "outside.html"
        outside.write_text("keep")
        if first is not None:  # a site built earlier, then files of the user's (and maybe a new marker) added
            build_site(out, first)
            marker = marker if isinstance(marker, str) and marker.startswith("dynzoo-site") else None
        out.mkdir(exist_ok=True)
        _populate(out, files, marker)
        licensed = _licensed(out)
        before = _tree(Path(tmp))
        try:
            build_site(out, second)
        except SiteError as exc:
            assert str(out) in str(exc)
            assert _tree(Path(tmp)) == before  # refused before writing anything
        else:
            expected = site.site_files(second)
            assert {rel: _tree(out)[rel].decode() for rel in expected} == expected
            assert set((out / SITE_MARKER).read_text().splitlines()[2:]) == set(expected)
            assert licensed or before.keys() == {"outside.html"}, "built into a directory that was not empty"
        after = _tree(Path(tmp))
        for rel, data in before.items():
            if rel.startswith("site/") and rel[len("site/"):] in licensed:
                continue
            assert after.get(rel) == data, f"{rel} was changed or removed"
