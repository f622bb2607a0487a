"""Validation of registry files: YAML (no duplicate keys) to the records of :mod:`zoo.registry_records`.

Every field of an entry is checked when it is loaded; an invalid entry raises :class:`RegistryError`
naming the file, the entry and the field (the schema is in :mod:`zoo.registry`'s docstring).
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import yaml

from zoo.converters import list_converters
from zoo.errors import RegistryError
from zoo.registry_records import (HubFile, ManualFile, Metric, ModelInfo, Paper, Preset, UpstreamFile, Weights,
                                  _freeze)
from zoo.tasks import TASK_NAMES

SCHEMA_VERSION = 2
SUPPORTED_SCHEMAS = (1, 2)
TASKS = TASK_NAMES  # the names of zoo.tasks.TASKS, in their order
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*[a-z0-9]$")
_TAG = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX_PREFIX = re.compile(r"^[0-9a-f]{8,64}$")
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_URL = re.compile(r"^(https?|file)://[^\s]+$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


# --------------------------------------------------------------------------------------- validation
class _Check:
    """Field accessors that raise RegistryError naming source, entry and field."""

    def __init__(self, source: str, entry: str):
        self.source, self.entry = source, entry

    def fail(self, field: str, problem: str) -> RegistryError:
        return RegistryError(f"{self.source}: entry {self.entry!r}, field {field!r}: {problem}")

    def get(self, mapping: Mapping, field: str, kind: type | tuple, path: str, *, optional=False, default=None):
        if not isinstance(mapping, Mapping):
            raise self.fail(path.rsplit(".", 1)[0] or path, f"must be a mapping, got {type(mapping).__name__}")
        if field not in mapping:
            if optional:
                return default
            raise self.fail(path, "is required")
        value = mapping[field]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.fail(path, f"must be {names}, got {value!r}")
        return value

    def match(self, value: str, pattern: re.Pattern, path: str, what: str) -> str:
        if not pattern.match(value):
            raise self.fail(path, f"must be {what}, got {value!r}")
        return value

    def no_unknown(self, mapping: Mapping, allowed: set[str], path: str) -> None:
        if not isinstance(mapping, Mapping):
            raise self.fail(path, f"must be a mapping, got {type(mapping).__name__}")
        unknown = sorted(set(mapping) - allowed, key=str)
        if unknown:
            where = f"{path}." if path else ""
            raise self.fail(f"{where}{unknown[0]}", f"unknown field; allowed: {', '.join(sorted(allowed))}")


@dataclasses.dataclass(frozen=True)
class Tables:
    """The shared tables entries refer to by id: ``papers``, ``presets`` and ``categories``."""

    papers: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    presets: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    categories: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def merged(self, other: Tables) -> Tables:
        return Tables({**self.papers, **other.papers}, {**self.presets, **other.presets},
                      {**self.categories, **other.categories})


_ENTRY_FIELDS = {
    "task", "arch", "args", "classifier", "paper", "license", "card", "input_size", "transforms",
    "postprocess", "exportable", "export_note", "min_input_size", "weights",
}
_TAG_FIELDS = {"source", "license", "hub", "upstream", "manual", "warm_start", "args", "transforms",
               "categories", "metrics"}
_V1_HUB_FIELDS = ("repo", "revision", "file", "sha256", "size")


def _reference(c: _Check, value: Any, table: Mapping[str, Any], path: str, what: str) -> Any:
    """An inline mapping, or the id of a row of a shared table."""
    if isinstance(value, str):
        if value not in table:
            known = ", ".join(sorted(table)) or "none"
            raise c.fail(path, f"names {what} {value!r}, which is not in the registry's {what} table (known: {known})")
        return table[value]
    return value


def _parse_preset(c: _Check, spec: Any, path: str, tables: Tables) -> Preset:
    spec = _reference(c, spec, tables.presets, path, "presets")
    c.no_unknown(spec, {"preset", "args"}, path)
    return Preset(preset=c.get(spec, "preset", str, f"{path}.preset"),
                  args=_freeze(c.get(spec, "args", Mapping, f"{path}.args", optional=True, default={})))


def _parse_paper(c: _Check, spec: Any, tables: Tables) -> Paper:
    spec = _reference(c, spec, tables.papers, "paper", "papers")
    if not isinstance(spec, Mapping):
        raise c.fail("paper", f"must be a papers id or a mapping, got {spec!r}")
    c.no_unknown(spec, {f.name for f in dataclasses.fields(Paper)}, "paper")
    paper = Paper(
        title=c.get(spec, "title", str, "paper.title"),
        authors=c.get(spec, "authors", str, "paper.authors"),
        venue=c.get(spec, "venue", str, "paper.venue"),
        year=c.get(spec, "year", int, "paper.year"),
        arxiv=c.get(spec, "arxiv", str, "paper.arxiv", optional=True),
        url=c.get(spec, "url", str, "paper.url", optional=True),
    )
    if paper.arxiv is None and paper.url is None:
        raise c.fail("paper.arxiv", "give an arXiv id or a paper.url")
    return paper


def parse_entry(name: str, raw: Any, source: str = "registry.yaml", *, tables: Tables | None = None,
                schema: int = SCHEMA_VERSION) -> ModelInfo:
    """Validate one registry entry and return its :class:`ModelInfo`."""
    tables = tables or Tables()
    c = _Check(source, name)
    if not isinstance(name, str) or not _NAME.match(name):
        raise c.fail("name", "must be lowercase letters, digits and '-' (e.g. 'deeplabv3-r50')")
    if not isinstance(raw, Mapping):
        raise c.fail("", f"an entry must be a mapping, got {type(raw).__name__}")
    c.no_unknown(raw, _ENTRY_FIELDS, "")
    task = c.get(raw, "task", str, "task")
    if task not in TASKS:
        raise c.fail("task", f"must be one of {', '.join(TASKS)}, got {task!r}")
    arch = c.get(raw, "arch", str, "arch")
    if not re.match(r"^[a-z0-9_]+$", arch):
        raise c.fail("arch", f"must be a constructor name from zoo's table (like 'deeplabv3'), got {arch!r}")
    args = c.get(raw, "args", Mapping, "args", optional=True, default={})
    classifier = c.get(raw, "classifier", list, "classifier", optional=True, default=[])
    for i, module in enumerate(classifier):
        if not isinstance(module, str):
            raise c.fail(f"classifier[{i}]", f"must be a module name, got {module!r}")
    input_size = c.get(raw, "input_size", list, "input_size")
    if not input_size or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in input_size):
        raise c.fail("input_size", f"must be a list of positive ints like [3, 513, 513], got {input_size!r}")

    weights_raw = c.get(raw, "weights", Mapping, "weights")
    c.no_unknown(weights_raw, {"default", "tags"}, "weights")
    tags_raw = c.get(weights_raw, "tags", Mapping, "weights.tags", optional=True, default={})
    weights = {tag: _parse_weights(c, tag, spec, tables, schema) for tag, spec in tags_raw.items()}
    default = weights_raw.get("default")
    if default is not None and not isinstance(default, str):
        raise c.fail("weights.default", f"must be a tag name or null, got {default!r}")
    if default is not None and default not in weights:
        raise c.fail("weights.default", f"names tag {default!r}, which is not in weights.tags ({', '.join(weights) or 'empty'})")
    if default is not None and weights[default].warm_start:
        raise c.fail("weights.default", f"tag {default!r} is a warm start (host weights, not a trained model) "
                                        "and cannot be the default")
    if default is None and any(not w.warm_start for w in weights.values()):
        raise c.fail("weights.default", f"must name one of the tags ({', '.join(weights)})")

    exportable = c.get(raw, "exportable", bool, "exportable")
    export_note = c.get(raw, "export_note", str, "export_note", optional=True)
    min_input_size = c.get(raw, "min_input_size", int, "min_input_size", optional=True)
    if min_input_size is not None and min_input_size < 1:
        raise c.fail("min_input_size", f"must be a positive number of pixels, got {min_input_size}")
    return ModelInfo(
        name=name,
        task=task,
        arch=arch,
        args=_freeze(dict(args)),
        paper=_parse_paper(c, c.get(raw, "paper", (str, Mapping), "paper"), tables),
        license=c.get(raw, "license", str, "license"),
        card=c.match(c.get(raw, "card", str, "card", optional=True, default=f"{name}.md"),
                     re.compile(r"^[a-z0-9.-]+\.md$"), "card", "a file name like 'name.md'"),
        input_size=tuple(input_size),
        transforms=_parse_preset(c, c.get(raw, "transforms", (str, Mapping), "transforms"), "transforms", tables),
        postprocess=_parse_preset(c, c.get(raw, "postprocess", (str, Mapping), "postprocess"), "postprocess", tables),
        exportable=exportable,
        export_note=export_note,
        min_input_size=min_input_size,
        weights=MappingProxyType(weights),
        default_tag=default,
        classifier=tuple(classifier),
        source=source,
    )


def _parse_metric(c: _Check, m: Any, mp: str) -> Metric:
    c.no_unknown(m, {"dataset", "split", "metric", "value", "measured", "reported"}, mp)
    fields = dict(dataset=c.get(m, "dataset", str, f"{mp}.dataset"), split=c.get(m, "split", str, f"{mp}.split"),
                  metric=c.get(m, "metric", str, f"{mp}.metric"), value=c.get(m, "value", float, f"{mp}.value"))
    measured = c.get(m, "measured", str, f"{mp}.measured", optional=True)
    reported = c.get(m, "reported", str, f"{mp}.reported", optional=True)
    if (measured is None) == (reported is None):
        raise c.fail(f"{mp}.measured", "give exactly one of 'measured' (the command of this repository that "
                                       "measured it) or 'reported' (who reported it, and where)")
    return Metric(**fields, measured=measured, reported=reported)


def _parse_hub(c: _Check, spec: Any, p: str) -> HubFile:
    c.no_unknown(spec, set(_V1_HUB_FIELDS), p)
    size = c.get(spec, "size", int, f"{p}.size")
    if size <= 0:
        raise c.fail(f"{p}.size", f"must be the file size in bytes (> 0), got {size}")
    return HubFile(
        repo=c.match(c.get(spec, "repo", str, f"{p}.repo"), _REPO, f"{p}.repo", "a Hub repo id 'org/name'"),
        revision=c.match(c.get(spec, "revision", str, f"{p}.revision"), _HEX40, f"{p}.revision",
                         "the full 40-hex commit sha the weights were published at"),
        file=c.get(spec, "file", str, f"{p}.file"),
        sha256=c.match(c.get(spec, "sha256", str, f"{p}.sha256"), _HEX64, f"{p}.sha256", "64 lowercase hex characters"),
        size=size,
    )


def _converter(c: _Check, spec: Mapping, p: str) -> str:
    name = c.get(spec, "converter", str, f"{p}.converter")
    if name not in list_converters():
        raise c.fail(f"{p}.converter", f"unknown converter {name!r}; known: {', '.join(list_converters())}")
    return name


def _parse_upstream(c: _Check, spec: Any, p: str) -> UpstreamFile:
    c.no_unknown(spec, {"url", "sha256", "converter", "cited_from"}, p)
    url = c.match(c.get(spec, "url", str, f"{p}.url"), _URL, f"{p}.url", "an http(s) URL")
    sha = c.get(spec, "sha256", str, f"{p}.sha256", optional=True)  # absent: the upstream publishes none
    if sha is not None:
        c.match(sha, _HEX_PREFIX, f"{p}.sha256", "the upstream's sha256: 64 lowercase hex, or the 8+ hex prefix its file name carries")
    up = UpstreamFile(
        url=url,
        sha256=sha,
        converter=_converter(c, spec, p),
        cited_from=c.get(spec, "cited_from", str, f"{p}.cited_from"),
    )
    if not _FILE_NAME.match(up.file_name):
        raise c.fail(f"{p}.url", f"must end in a file name, got {url!r}")
    return up


def _parse_manual(c: _Check, spec: Any, p: str) -> ManualFile:
    c.no_unknown(spec, {"page", "file_name", "sha256", "converter", "cited_from"}, p)
    sha = c.get(spec, "sha256", str, f"{p}.sha256", optional=True)
    if sha is not None:
        c.match(sha, _HEX_PREFIX, f"{p}.sha256", "a sha256 (64 lowercase hex) or its 8+ hex prefix")
    return ManualFile(
        page=c.match(c.get(spec, "page", str, f"{p}.page"), _URL, f"{p}.page", "the URL of the download page"),
        file_name=c.match(c.get(spec, "file_name", str, f"{p}.file_name"), _FILE_NAME, f"{p}.file_name",
                          "the file name the page gives (no directories)"),
        converter=_converter(c, spec, p), sha256=sha,
        cited_from=c.get(spec, "cited_from", str, f"{p}.cited_from", optional=True),
    )


def _parse_weights(c: _Check, tag: Any, spec: Any, tables: Tables, schema: int) -> Weights:
    p = f"weights.tags.{tag}"
    if not isinstance(tag, str) or not _TAG.match(tag):
        raise c.fail(p, "a tag must be lowercase letters, digits, '-' or '_'")
    if not isinstance(spec, Mapping):
        raise c.fail(p, f"must be a mapping, got {type(spec).__name__}")
    if schema == 1:  # schema 1: the Hub fields sat directly in the tag
        spec = {k: v for k, v in spec.items() if k not in _V1_HUB_FIELDS} | {
            "hub": {k: spec[k] for k in _V1_HUB_FIELDS if k in spec}}
        hub = _parse_hub(c, spec["hub"], p)
    else:
        hub = None
    c.no_unknown(spec, _TAG_FIELDS, p)
    if schema != 1 and "hub" in spec:
        hub = _parse_hub(c, spec["hub"], f"{p}.hub")
    upstream = _parse_upstream(c, spec["upstream"], f"{p}.upstream") if "upstream" in spec else None
    manual = _parse_manual(c, spec["manual"], f"{p}.manual") if "manual" in spec else None
    warm_start = c.get(spec, "warm_start", str, f"{p}.warm_start", optional=True)
    if warm_start is not None and not re.match(r"^[a-z0-9][a-z0-9-]*\.[a-z0-9][a-z0-9_-]*$", warm_start):
        raise c.fail(f"{p}.warm_start", f"must name the host weights as ENTRY.TAG, got {warm_start!r}")
    sources = [k for k, v in (("upstream", upstream), ("manual", manual), ("warm_start", warm_start)) if v is not None]
    if len(sources) > 1:
        raise c.fail(f"{p}.{sources[1]}", f"a tag takes one of upstream, manual or warm_start (has {', '.join(sources)})")
    if hub is None and not sources:
        raise c.fail(p, "say where the file comes from: hub, upstream, manual or warm_start")
    categories = c.get(spec, "categories", str, f"{p}.categories", optional=True)
    if categories is not None and categories not in tables.categories:
        known = ", ".join(sorted(tables.categories)) or "none"
        raise c.fail(f"{p}.categories", f"names {categories!r}, which is not in the categories table (known: {known})")
    transforms = spec.get("transforms")
    return Weights(
        tag=tag,
        source=c.get(spec, "source", str, f"{p}.source"),
        license=c.get(spec, "license", str, f"{p}.license"),
        hub=hub, upstream=upstream, manual=manual, warm_start=warm_start,
        args=_freeze(dict(c.get(spec, "args", Mapping, f"{p}.args", optional=True, default={}))),
        transforms=_parse_preset(c, transforms, f"{p}.transforms", tables) if transforms is not None else None,
        categories=categories,
        metrics=tuple(_parse_metric(c, m, f"{p}.metrics[{i}]")
                      for i, m in enumerate(c.get(spec, "metrics", list, f"{p}.metrics", optional=True, default=[]))),
    )


def parse_tables(doc: Mapping, source: str) -> Tables:
    out = {}
    for table in ("papers", "presets", "categories"):
        rows = doc.get(table) or {}
        if not isinstance(rows, Mapping):
            raise RegistryError(f"{source}: '{table}' must be a mapping of id -> row")
        for key, row in rows.items():
            if not isinstance(key, str) or not _ID.match(key):
                raise RegistryError(f"{source}: {table} id {key!r} must be lowercase letters, digits, '-' or '_'")
            if not isinstance(row, Mapping):
                raise RegistryError(f"{source}: {table}.{key} must be a mapping")
        out[table] = dict(rows)
    for key, row in out["categories"].items():
        if set(row) not in ({"torchvision"}, {"names", "cited_from"}):
            raise RegistryError(f"{source}: categories.{key} must be {{torchvision: NAME}} (a list in "
                                "torchvision.models._meta) or {names: [...], cited_from: ...}")
    return Tables(**out)


class _RegistryLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last value silently).

    Checked as each mapping is composed, on its keys as written, so that keys brought in by a merge
    (``<<``) may still be overridden."""

    source = "<string>"

    def compose_mapping_node(self, anchor: Any) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue  # a collection as a key is refused as unhashable when constructed
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise RegistryError(f"{self.source}, line {line}: duplicate key {key_node.value!r} (first at line "
                                    f"{seen[key]}); a key may appear once per mapping: remove or rename one")
            seen[key] = line
        return node


def load_yaml(text: str, source: str) -> Any:
    try:
        loader = _RegistryLoader(text)
    except yaml.YAMLError as exc:  # a character YAML does not allow
        raise RegistryError(f"{source}: not valid YAML: {exc}") from None
    loader.source = loader.name = source
    try:
        return loader.get_single_data()
    except RegistryError:
        raise
    except yaml.YAMLError as exc:
        raise RegistryError(f"{source}: not valid YAML: {exc}") from None
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:  # scalars of explicit tags, huge ints
        raise RegistryError(f"{source}: not valid YAML: a value cannot be read ({exc})") from None
    except RecursionError:
        raise RegistryError(f"{source}: not valid YAML: nested too deeply") from None
    finally:
        loader.dispose()
