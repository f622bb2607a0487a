"""Model cards: one per entry, current with the registry, valid Hub front matter."""
from __future__ import annotations

import copy
import re

import pytest

import zoo
from conftest import SMALL_ENTRY
from zoo.cards import HAND_SECTIONS, ORDER, card_problems, cards_dir, front_matter, split_card
from zoo.registry import default_registry, parse_entry

ENTRIES = [i.name for i in default_registry()]


@pytest.mark.parametrize("name", ENTRIES)
def test_card_exists_and_is_current(name):
    assert card_problems(zoo.model_info(name)) == []


@pytest.mark.parametrize("name", ENTRIES)
def test_card_front_matter_and_sections(name):
    info = zoo.model_info(name)
    front, sections = split_card(zoo.model_card(name))
    assert front["license"] == info.license and front["library_name"] == "dynzoo"
    assert list(sections) == list(ORDER)
    for title in HAND_SECTIONS:
        assert len(sections[title].split()) >= 15, f"{name}: section {title!r} is too thin"
    registry_metrics = {(m.dataset, m.split, m.metric, m.value) for w in info.weights.values() for m in w.metrics}
    card_metrics = {
        (r["dataset"]["name"], r["dataset"]["split"], met["type"], met["value"])
        for entry in front.get("model-index", []) for r in entry["results"] for met in r["metrics"]
    }
    assert card_metrics == registry_metrics, "the card names metrics the registry does not have (or misses some)"
    if not info.weights:
        assert "No weights are published" in sections["Weights"]


def test_no_orphan_cards():
    cards = {p.name for p in cards_dir().glob("*.md")}
    assert cards == {zoo.model_info(n).card for n in ENTRIES}


def test_stale_card_is_detected(tmp_path, monkeypatch):
    import zoo.cards as C

    info = zoo.model_info(ENTRIES[0])
    text = (cards_dir() / info.card).read_text()
    (tmp_path / info.card).write_text(text.replace("## Usage", "## Usage\n\nhand edit"))
    monkeypatch.setattr(C, "cards_dir", lambda: tmp_path)
    assert "stale" in card_problems(info)[0]
    assert front_matter(info)["tags"][0] == "dynzoo"


def test_the_core_never_imports_the_cards_package():
    """registry, weights and factory, and every zoo module they import (at the top or inside a function), stay
    free of zoo.cards: the browse package depends on the core, never the other way round."""
    import ast
    from pathlib import Path

    root = Path(zoo.__file__).parent
    todo, seen, offenders = ["zoo.registry", "zoo.weights", "zoo.factory"], set(), []
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = root.joinpath(*module.split(".")[1:])
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        if not path.is_file():
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                if name == "zoo.cards" or name.startswith("zoo.cards."):
                    offenders.append(f"{module} imports {name}")
                elif name.startswith("zoo.") and name.count(".") <= 3:
                    todo.append(name)
    assert "zoo.upstream" in seen and "zoo.hubconfig" in seen  # the walk follows lazy imports too
    assert offenders == []


def test_a_pipe_in_registry_text_stays_in_its_table_cell():
    from zoo.cards import generated_sections
    from zoo.cards.markdown import markdown_to_html

    metric = {"dataset": "A|B", "split": "val", "metric": "mIoU", "value": 1.0, "measured": "`python e.py | tee log`"}
    weights = {"default": "t", "tags": {"t": {
        "hub": {"repo": "zoo-test/pipe", "revision": "a" * 40, "file": "model.safetensors", "sha256": "b" * 64,
                "size": 1}, "source": "made for the card tests", "license": "mit", "metrics": [metric]}}}
    info = parse_entry("test-pipe", {**copy.deepcopy(SMALL_ENTRY), "weights": weights}, "tests/test_cards.py")
    html = markdown_to_html(generated_sections(info)["Weights"])
    row = re.search(r"<tbody>\n<tr>\n(.*?)</tr>", html, flags=re.S).group(1)
    assert row.count("<td>") == 7 and "<td>A|B</td>" in row and "<td><code>python e.py | tee log</code></td>" in row
