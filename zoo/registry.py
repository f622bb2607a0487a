"""The model registry: ``registry.yaml`` parsed into frozen :class:`ModelInfo` records.

``registry.yaml`` (shipped in the wheel) is the single source of truth for model names, constructor
(``arch``, a key of zoo's constructor table — never an import path), arguments, weights, transforms
and metadata. Every entry is validated when loaded; an invalid entry raises :class:`RegistryError`
naming the file, the entry and the field. Users add entries with :func:`load`.

Schema (``schema_version: 2``; CONTRIBUTING.md has the migration note from 1)::

    schema_version: 2
    papers:     {<id>: {title, authors, venue, year, arxiv | url}}     # referenced by entries
    presets:    {<id>: {preset: <name>, args: {...}}}                  # transforms / postprocess
    categories: {<id>: {torchvision: <name in torchvision.models._meta>} | {names: [...], cited_from}}
    models:
      <name>:                      # lowercase letters, digits and '-'
        task: <one of TASKS>
        arch: <constructor name>   # zoo.archs.register_arch
        args: {...}                # keyword arguments of the constructor
        classifier: [module, ...]  # re-initialised when create(num_classes=...) differs (optional)
        paper: <papers id> | {title, authors, venue, year, arxiv | url}
        license: <SPDX-like id>    # of the code / architecture
        card: <file in model_cards/>   # optional, default <name>.md
        input_size: [C, H, W]      # the size parameter and FLOP reports use
        transforms: <presets id> | {preset: <name>, args: {...}}
        postprocess: <presets id> | {preset: <name>, args: {...}}
        exportable: true|false     # tested under torch.export and `zoo export` (ONNX)
        export_note: <why not>     # when exportable is false (every shipped entry has one)
        min_input_size: <pixels>   # smaller inputs are refused by the transforms (optional)
        weights:
          default: <tag> | null    # null only when there are no tags or only warm-start tags
          tags:
            <tag>:
              source: <how the weights were made>
              license: <SPDX-like id of the weights>
              # where the file comes from: hub and/or upstream, or manual, or warm_start (+ hub)
              hub: {repo, revision (40 hex), file, sha256 (64 hex), size}
              upstream: {url, sha256, converter, cited_from}   # sha256: 64 hex, or the 8+ hex prefix the file
                                         # name carries; omitted only when the upstream publishes no hash
              manual: {page, file_name, converter, sha256 (optional), cited_from (optional)}
              warm_start: <name>.<tag>   # the host's weights expanded into this entry (see zoo.upstream)
              args: {...}                # constructor arguments these weights need beyond the entry's
              transforms: <presets id> | {preset, args}   # the preprocessing the weights were trained with
              categories: <categories id>
              metrics: [{dataset, split, metric, value, measured: <our command> | reported: <who, where>}]

Schema 1 files (hub fields directly in the tag, every block written out) still load.
"""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import re
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import yaml

from zoo.archs import get_arch
from zoo.errors import RegistryError, UnknownModelError
from zoo.tasks import TASK_NAMES

if TYPE_CHECKING:
    from torch import nn

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


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Plain dicts/lists from frozen registry values (for JSON, YAML and constructor calls)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class Paper:
    title: str
    authors: str
    venue: str
    year: int
    arxiv: str | None = None
    url: str | None = None

    @property
    def link(self) -> str | None:
        return f"https://arxiv.org/abs/{self.arxiv}" if self.arxiv else self.url


@dataclasses.dataclass(frozen=True)
class Metric:
    """One number and who stands behind it: ``measured`` (our command) or ``reported`` (upstream, where)."""

    dataset: str
    split: str
    metric: str
    value: float
    measured: str | None = None
    reported: str | None = None

    @property
    def by(self) -> str:
        return "measured" if self.measured is not None else "reported"

    @property
    def evidence(self) -> str:
        return self.measured if self.measured is not None else self.reported  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class HubFile:
    """A file at a pinned commit of a Hugging Face Hub repository (the zoo's own releases)."""

    repo: str
    revision: str
    file: str
    sha256: str
    size: int


@dataclasses.dataclass(frozen=True)
class UpstreamFile:
    """An official checkpoint at the URL its authors publish, with their hash and zoo's converter."""

    url: str
    sha256: str | None  # the full sha256, the prefix the file name carries (torchvision, OpenMMLab), or None
    converter: str
    cited_from: str

    @property
    def file_name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]


@dataclasses.dataclass(frozen=True)
class ManualFile:
    """An official checkpoint behind a login or a file-sharing page: the user downloads it by hand."""

    page: str
    file_name: str
    converter: str
    sha256: str | None = None
    cited_from: str | None = None


@dataclasses.dataclass(frozen=True)
class Preset:
    preset: str
    args: Mapping[str, Any] = dataclasses.field(default_factory=lambda: MappingProxyType({}))

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, "args": thaw(self.args)}


@dataclasses.dataclass(frozen=True)
class Weights:
    """One weights tag: where its file comes from and what the weights need and measure."""

    tag: str
    source: str
    license: str
    hub: HubFile | None = None
    upstream: UpstreamFile | None = None
    manual: ManualFile | None = None
    warm_start: str | None = None
    args: Mapping[str, Any] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    transforms: Preset | None = None
    categories: str | None = None
    metrics: tuple[Metric, ...] = ()

    @property
    def kind(self) -> str:
        """``hub``, ``upstream``, ``manual`` or ``warm-start``: how ``pretrained=True`` obtains the file
        when nothing is cached (``hub`` is tried first when a tag has it)."""
        if self.hub is not None:
            return "hub"
        if self.upstream is not None:
            return "upstream"
        if self.warm_start is not None:
            return "warm-start"
        return "manual"

    @property
    def obtainable(self) -> bool:
        """True when ``pretrained=`` can fetch the file without a manual step (a warm start: when its
        host's weights can be fetched)."""
        if self.hub is not None or self.upstream is not None:
            return True
        if self.warm_start is not None:
            name, _, tag = self.warm_start.rpartition(".")
            registry = default_registry()
            return name in registry and tag in registry.get(name).weights and registry.get(name).weights[tag].obtainable
        return False

    @property
    def converter(self) -> str | None:
        spec = self.upstream or self.manual
        return spec.converter if spec is not None else None


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """Everything the registry says about one model."""

    name: str
    task: str
    arch: str
    args: Mapping[str, Any]
    paper: Paper
    license: str
    card: str
    input_size: tuple[int, ...]
    transforms: Preset
    postprocess: Preset
    exportable: bool
    weights: Mapping[str, Weights]
    default_tag: str | None
    classifier: tuple[str, ...] = ()
    source: str = "registry.yaml"
    export_note: str | None = None
    min_input_size: int | None = None

    @property
    def pretrained(self) -> bool:
        """True when some tag can be obtained with ``pretrained=`` (bundled, Hub, upstream or warm start)."""
        return any(w.obtainable for w in self.weights.values())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (the registry entry plus name and source)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["paper"] = dataclasses.asdict(self.paper)
        out["transforms"] = self.transforms.to_dict()
        out["postprocess"] = self.postprocess.to_dict()
        out["weights"] = {t: _weights_dict(w) for t, w in self.weights.items()}
        return thaw(out)

    def weights_for(self, tag: str | None = None) -> Weights:
        """The weights for ``tag`` (the default tag when None)."""
        tag = tag or self.default_tag
        if tag is None:
            raise UnknownModelError(no_weights_message(self))
        if tag not in self.weights:
            known = ", ".join(sorted(self.weights)) or "none"
            raise UnknownModelError(f"{self.name!r} has no weights tagged {tag!r} (tags: {known})")
        return self.weights[tag]

    def args_for(self, tag: str | None) -> dict[str, Any]:
        """Constructor arguments for the weights ``tag`` (the entry's, updated by the tag's)."""
        extra = self.weights[tag].args if tag is not None else {}
        return {**thaw(self.args), **thaw(extra)}

    def for_tag(self, tag: str | None) -> ModelInfo:
        """This entry as the weights ``tag`` need it: the tag's args and transforms in place of the entry's
        (what a Hub ``config.json`` of those weights records)."""
        if tag is None:
            return self
        return dataclasses.replace(self, args=_freeze(self.args_for(tag)), transforms=self.transforms_for(tag))

    def transforms_for(self, tag: str | None) -> Preset:
        w = self.weights.get(tag) if tag is not None else None
        return w.transforms if w is not None and w.transforms is not None else self.transforms


def _weights_dict(w: Weights) -> dict[str, Any]:
    out: dict[str, Any] = {"source": w.source, "license": w.license, "kind": w.kind}
    for field in ("hub", "upstream", "manual"):
        spec = getattr(w, field)
        if spec is not None:
            out[field] = {k: v for k, v in dataclasses.asdict(spec).items() if v is not None}
    if w.warm_start:
        out["warm_start"] = w.warm_start
    if w.args:
        out["args"] = thaw(w.args)
    if w.transforms is not None:
        out["transforms"] = w.transforms.to_dict()
    if w.categories:
        out["categories"] = w.categories
    out["metrics"] = [{k: v for k, v in dataclasses.asdict(m).items() if v is not None} for m in w.metrics]
    return out


def no_weights_message(info: ModelInfo) -> str:
    warm = sorted(t for t, w in info.weights.items() if w.warm_start)
    parts = [f"{info.name!r} has no published weights: nobody released any for this network"]
    if warm:
        parts.append(f"; its tag {warm[0]!r} is the host network's official weights expanded into it (a "
                     f"starting point for fine-tuning, not a trained model): pretrained={warm[0]!r}")
    near = nearest_pretrained(info)
    if near:
        parts.append(f"; the nearest entry with trained weights is {near!r}")
    parts.append("; or create it with pretrained=False, or pass checkpoint=PATH to load your own")
    return "".join(parts)


def nearest_pretrained(info: ModelInfo) -> str | None:
    """The registered entry closest to ``info`` (same task and arch first, then name) that has a default tag."""
    candidates = [i for i in default_registry() if i.default_tag is not None and i.name != info.name]
    if not candidates:
        return None
    def score(other: ModelInfo) -> tuple:
        return (other.task == info.task, other.arch == info.arch,
                difflib.SequenceMatcher(None, info.name, other.name).ratio())
    return max(candidates, key=score).name


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
    from zoo.converters import list_converters

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


def _parse_tables(doc: Mapping, source: str) -> Tables:
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


# --------------------------------------------------------------------------------------- registry
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


def _load_yaml(text: str, source: str) -> Any:
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


class Registry:
    """A set of validated entries, from the shipped registry.yaml and any user files."""

    def __init__(self) -> None:
        self._entries: dict[str, ModelInfo] = {}
        self.tables = Tables()

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[ModelInfo]:
        return iter(self._entries[n] for n in sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, info: ModelInfo, *, replace: bool = False) -> None:
        if info.name in self._entries and not replace:
            raise RegistryError(
                f"{info.source}: entry {info.name!r} already exists (from {self._entries[info.name].source}); "
                "rename it or pass replace=True"
            )
        self._entries[info.name] = info

    def load_text(self, text: str, source: str, *, replace: bool = False) -> list[str]:
        doc = _load_yaml(text, source)
        if not isinstance(doc, Mapping):
            raise RegistryError(f"{source}: must be a mapping with 'schema_version' and 'models'")
        version = doc.get("schema_version")
        if type(version) is not int or version not in SUPPORTED_SCHEMAS:  # not true, not 1.0
            raise RegistryError(f"{source}: schema_version must be {SCHEMA_VERSION} (1 is still read), got {version!r}")
        allowed = {"schema_version", "models"} | ({"papers", "presets", "categories"} if version >= 2 else set())
        unknown = set(doc) - allowed
        if unknown:
            raise RegistryError(f"{source}: unknown top-level field(s) {sorted(map(str, unknown))}; "
                                f"allowed: {', '.join(sorted(allowed))}")
        tables = self.tables.merged(_parse_tables(doc, source))
        models = doc.get("models") or {}
        if not isinstance(models, Mapping):
            raise RegistryError(f"{source}: 'models' must be a mapping of name -> entry")
        infos = [parse_entry(name, raw, source, tables=tables, schema=version) for name, raw in models.items()]
        if not replace:  # all-or-nothing: check every name before adding any
            for info in infos:
                if info.name in self._entries:
                    self.add(info)  # raises with the message
        for info in infos:
            self.add(info, replace=replace)
        self.tables = tables
        return [i.name for i in infos]

    def get(self, name: str) -> ModelInfo:
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise UnknownModelError(f"unknown model {name!r}.{hint} See zoo.list_models() or `zoo list`.") from None

    def names(self) -> list[str]:
        return sorted(self._entries)


_REGISTRY: Registry | None = None


def default_registry() -> Registry:
    """The shipped registry, loaded on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        registry = Registry()
        text = resources.files("zoo").joinpath("registry.yaml").read_text(encoding="utf-8")
        registry.load_text(text, "registry.yaml")
        _REGISTRY = registry
    return _REGISTRY


def load(path: str | Path, *, replace: bool = False) -> list[str]:
    """Add the entries of a user registry file (same schema) to the default registry.

    The file may refer to the shipped ``papers``, ``presets`` and ``categories`` ids and add its own.
    Returns the names added. Nothing is added when any entry is invalid.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistryError(f"cannot read registry file {path}: {exc.strerror}") from None
    return default_registry().load_text(text, str(path), replace=replace)


def get(name: str) -> ModelInfo:
    return default_registry().get(name)


def parse_name(name: str) -> tuple[str, str | None]:
    """``"deeplabv3-r50.coco"`` -> ``("deeplabv3-r50", "coco")``; a bare name gives tag None."""
    registry = default_registry()
    if name in registry:
        return name, None
    base, dot, tag = name.rpartition(".")
    if dot and base in registry:
        return base, tag
    registry.get(name)  # raises UnknownModelError with suggestions
    raise AssertionError  # pragma: no cover


def build_model(info: ModelInfo, **arch_overrides: Any) -> "nn.Module":
    """Call the entry's constructor with its args updated by ``arch_overrides`` (random init)."""
    fn = get_arch(info.arch)
    args = {**thaw(info.args), **arch_overrides}
    try:
        return fn(**args)
    except TypeError as exc:
        raise RegistryError(f"entry {info.name!r}, field 'args' (with overrides {sorted(arch_overrides)}): {exc}") from None


def categories(category_id: str) -> tuple[str, ...]:
    """Class names in output order for a ``categories`` table id (torchvision's lists read from
    ``torchvision.models._meta``, the others from the registry)."""
    row = default_registry().tables.categories.get(category_id)
    if row is None:
        raise UnknownModelError(f"unknown categories id {category_id!r}; known: "
                                f"{', '.join(sorted(default_registry().tables.categories))}")
    if "torchvision" in row:
        from torchvision.models import _meta

        return tuple(getattr(_meta, row["torchvision"]))
    return tuple(row["names"])


def list_models(pattern: str = "*", *, task: str | None = None, pretrained: bool = False, tags: bool = False) -> list[str]:
    """Registered model names matching ``pattern`` (fnmatch).

    ``task`` filters by task, ``pretrained`` keeps models whose weights ``pretrained=`` can obtain
    (bundled, Hub, official upstream files, warm starts), ``tags`` lists ``name.tag`` for every
    weights tag instead of bare names.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    out = []
    for info in default_registry():
        if task is not None and info.task != task:
            continue
        if pretrained and not info.pretrained:
            continue
        names = [f"{info.name}.{t}" for t in sorted(info.weights)] if tags and info.weights else [info.name]
        out.extend(n for n in names if fnmatch.fnmatchcase(n, pattern) or fnmatch.fnmatchcase(info.name, pattern))
    return out
