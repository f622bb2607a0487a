"""Fuzzed registry YAML: Registry.load_text gives RegistryError or a valid parse, never another exception,
and a key given twice is always refused."""
from __future__ import annotations

import copy
import json
import re

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from zoo.errors import RegistryError
from zoo.registry import Registry
from test_registry import GOOD as REGISTRY_GOOD

SETTINGS = settings(max_examples=200, deadline=None, database=None)
GOOD = copy.deepcopy(REGISTRY_GOOD)  # test_registry's entry, with one tag of every kind
del GOOD["card"]
GOOD["weights"]["tags"]["t1"]["categories"] = "voc"
GOOD["weights"]["tags"].update({
    "t2": {"upstream": {"url": "https://e.org/w.pth", "sha256": "c" * 64, "converter": "fyu-drn", "cited_from": "c"},
           "source": "s", "license": "mit"},
    "t3": {"manual": {"page": "https://e.org", "file_name": "w.pth", "converter": "fyu-drn"}, "source": "s", "license": "mit"},
    "t4": {"warm_start": "other-model.t1", "source": "s", "license": "mit"},
})
GOOD_DOC = {"schema_version": 2, "papers": {"p": dict(GOOD["paper"])}, "presets": {"seg": copy.deepcopy(GOOD["transforms"])},
            "categories": {"voc": {"names": ["a", "b"], "cited_from": "o/r@" + "0" * 40 + ":f"}},
            "models": {"good-model": GOOD}}


def _load(text: str) -> list[str] | None:
    """load_text on a fresh registry: RegistryError (None) or the names, whose entries then round-trip."""
    reg = Registry()
    try:
        names = reg.load_text(text, "fuzz.yaml")
    except RegistryError as exc:
        assert str(exc).startswith("fuzz.yaml")
        assert len(reg) == 0  # nothing of a refused file stays
        return None
    for name in names:
        json.dumps(reg.get(name).to_dict())
    return names


def test_the_valid_document_loads():
    assert _load(yaml.safe_dump(GOOD_DOC)) == ["good-model"]


# ---- random documents
scalars = (st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False)
           | st.text(max_size=8) | st.sampled_from(["semantic-segmentation", "deeplabv3", "t1", "seg", "p", "voc"]))
keys = st.text(max_size=8) | st.integers(-3, 3) | st.sampled_from(
    ["schema_version", "models", "papers", "presets", "categories", "task", "arch", "args", "weights", "tags",
     "default", "hub", "upstream", "manual", "warm_start", "metrics", "paper", "input_size", "transforms"])
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
                      max_leaves=25)


@SETTINGS
@given(st.one_of(values, st.dictionaries(keys, values, max_size=5),
                 st.fixed_dictionaries({"schema_version": st.sampled_from([1, 2, 3, "2", True, 2.0]),
                                        "models": st.dictionaries(keys, values, max_size=3)},
                                       optional={"papers": values, "presets": values, "categories": values})))
def test_random_documents(doc):
    _load(yaml.safe_dump(doc))


# ---- mutations of a valid document
def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


PATHS = [p for p in _paths(GOOD_DOC) if p]


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(PATHS), st.sampled_from(["replace", "delete", "add"]), values, keys),
                min_size=1, max_size=3))
@example([(("models", "good-model", "weights", "default"), "replace", [], "")])  # unhashable default tag
@example([(("models", "good-model", "paper"), "add", 1, 1), (("models", "good-model", "paper"), "add", 1, "z")])
def test_mutated_valid_documents(mutations):
    doc = copy.deepcopy(GOOD_DOC)
    for path, how, value, key in mutations:
        parent = doc
        try:
            for step in path[:-1]:
                parent = parent[step]
            if how == "delete":
                del parent[path[-1]]
            elif how == "add" and isinstance(parent[path[-1]], dict):
                parent[path[-1]][key] = value
            else:
                parent[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced the path
    _load(yaml.safe_dump(doc))


TEXT = yaml.safe_dump(GOOD_DOC, sort_keys=False)
KEY_LINE = re.compile(r"^( *)([a-z_0-9-]+): ")


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, len(TEXT)), st.integers(0, 8), st.text(max_size=6)), min_size=1, max_size=4))
def test_edited_text(edits):
    text = TEXT
    for at, cut, insert in edits:
        at = min(at, len(text))
        text = text[:at] + insert + text[at + cut:]
    _load(text)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


@SETTINGS
@given(st.sampled_from([i for i, line in enumerate(TEXT.splitlines()) if KEY_LINE.match(line)]), st.booleans())
def test_a_repeated_key_is_always_refused(index, at_the_end):
    lines = TEXT.splitlines()
    indent, key = KEY_LINE.match(lines[index]).groups()
    n, at = len(indent), index + 1
    while at_the_end and at < len(lines) and (_indent(lines[at]) > n or _indent(lines[at]) == n and (
            lines[at][n:].startswith("- ") or KEY_LINE.match(lines[at]))):
        at += 1  # past the value and the later keys of the same mapping
    lines.insert(at, lines[index])
    with pytest.raises(RegistryError, match=f"^fuzz.yaml, line {at + 1}: duplicate key '{re.escape(key)}' "
                                            f"\\(first at line {index + 1}\\)"):
        Registry().load_text("\n".join(lines) + "\n", "fuzz.yaml")
