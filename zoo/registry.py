"""The model registry: ``registry.yaml`` parsed into frozen :class:`ModelInfo` records.

``registry.yaml`` (shipped in the wheel) is the single source of truth for model names, constructor
(``arch``, a key of zoo's constructor table — never an import path), arguments, weights, transforms
and metadata. Every entry is validated when loaded; an invalid entry raises :class:`RegistryError`
naming the file, the entry and the field. Users add entries with :func:`load`.

Schema (``schema_version: 1``)::

    schema_version: 1
    models:
      <name>:                      # lowercase letters, digits and '-'
        task: <one of TASKS>
        arch: <constructor name>   # zoo.archs.register_arch
        args: {...}                # keyword arguments of the constructor
        classifier: [module, ...]  # re-initialised when create(num_classes=...) differs (optional)
        paper: {title, authors, venue, year, arxiv (optional), url (optional)}
        license: <SPDX-like id>
        card: <file in model_cards/>
        input_size: [C, H, W]      # the size parameter and FLOP reports use
        transforms: {preset: <name>, args: {...}}
        postprocess: {preset: <name>, args: {...}}
        exportable: true|false     # tested under torch.export
        weights:
          default: <tag> | null
          tags:
            <tag>: {repo, revision (40 hex), file, sha256 (64 hex), size, source, license,
                    metrics: [{dataset, split, metric, value, measured}]}
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
from typing import Any

import yaml

from zoo.errors import RegistryError, UnknownModelError

SCHEMA_VERSION = 1
TASKS = (
    "semantic-segmentation",
    "optical-flow",
    "image-classification",
    "object-detection",
    "instance-segmentation",
    "salient-object-detection",
    "video-prediction",
)
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*[a-z0-9]$")
_TAG = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


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
    dataset: str
    split: str
    metric: str
    value: float
    measured: str


@dataclasses.dataclass(frozen=True)
class Weights:
    """One published set of weights: a file at a pinned revision of a Hub repository."""

    tag: str
    repo: str
    revision: str
    file: str
    sha256: str
    size: int
    source: str
    license: str
    metrics: tuple[Metric, ...] = ()


@dataclasses.dataclass(frozen=True)
class Preset:
    preset: str
    args: Mapping[str, Any] = dataclasses.field(default_factory=lambda: MappingProxyType({}))


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

    @property
    def pretrained(self) -> bool:
        return self.default_tag is not None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (the registry entry plus name and source)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["paper"] = dataclasses.asdict(self.paper)
        out["transforms"] = {"preset": self.transforms.preset, "args": thaw(self.transforms.args)}
        out["postprocess"] = {"preset": self.postprocess.preset, "args": thaw(self.postprocess.args)}
        out["weights"] = {t: {**{f.name: getattr(w, f.name) for f in dataclasses.fields(w)},
                              "metrics": [dataclasses.asdict(m) for m in w.metrics]} for t, w in self.weights.items()}
        return thaw(out)

    def weights_for(self, tag: str | None = None) -> Weights:
        """The weights for ``tag`` (the default tag when None)."""
        tag = tag or self.default_tag
        if tag is None:
            raise UnknownModelError(
                f"{self.name!r} has no published weights; create it with pretrained=False, "
                "or pass checkpoint=PATH to load your own"
            )
        if tag not in self.weights:
            known = ", ".join(sorted(self.weights)) or "none"
            raise UnknownModelError(f"{self.name!r} has no weights tagged {tag!r} (tags: {known})")
        return self.weights[tag]


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
        unknown = sorted(set(mapping) - allowed)
        if unknown:
            where = f"{path}." if path else ""
            raise self.fail(f"{where}{unknown[0]}", f"unknown field; allowed: {', '.join(sorted(allowed))}")


_ENTRY_FIELDS = {
    "task", "arch", "args", "classifier", "paper", "license", "card", "input_size", "transforms",
    "postprocess", "exportable", "weights",
}


def parse_entry(name: str, raw: Any, source: str = "registry.yaml") -> ModelInfo:
    """Validate one registry entry and return its :class:`ModelInfo`."""
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

    paper_raw = c.get(raw, "paper", Mapping, "paper")
    c.no_unknown(paper_raw, {f.name for f in dataclasses.fields(Paper)}, "paper")
    paper = Paper(
        title=c.get(paper_raw, "title", str, "paper.title"),
        authors=c.get(paper_raw, "authors", str, "paper.authors"),
        venue=c.get(paper_raw, "venue", str, "paper.venue"),
        year=c.get(paper_raw, "year", int, "paper.year"),
        arxiv=c.get(paper_raw, "arxiv", str, "paper.arxiv", optional=True),
        url=c.get(paper_raw, "url", str, "paper.url", optional=True),
    )
    if paper.arxiv is None and paper.url is None:
        raise c.fail("paper.arxiv", "give an arXiv id or a paper.url")

    input_size = c.get(raw, "input_size", list, "input_size")
    if not input_size or not all(isinstance(v, int) and v > 0 for v in input_size):
        raise c.fail("input_size", f"must be a list of positive ints like [3, 513, 513], got {input_size!r}")

    presets = {}
    for field in ("transforms", "postprocess"):
        spec = c.get(raw, field, Mapping, field)
        c.no_unknown(spec, {"preset", "args"}, field)
        presets[field] = Preset(
            preset=c.get(spec, "preset", str, f"{field}.preset"),
            args=_freeze(c.get(spec, "args", Mapping, f"{field}.args", optional=True, default={})),
        )

    weights_raw = c.get(raw, "weights", Mapping, "weights")
    c.no_unknown(weights_raw, {"default", "tags"}, "weights")
    tags_raw = c.get(weights_raw, "tags", Mapping, "weights.tags", optional=True, default={})
    weights = {tag: _parse_weights(c, tag, spec) for tag, spec in tags_raw.items()}
    default = weights_raw.get("default")
    if default is not None and default not in weights:
        raise c.fail("weights.default", f"names tag {default!r}, which is not in weights.tags ({', '.join(weights) or 'empty'})")
    if default is None and weights:
        raise c.fail("weights.default", f"must name one of the tags ({', '.join(weights)})")

    return ModelInfo(
        name=name,
        task=task,
        arch=arch,
        args=_freeze(dict(args)),
        paper=paper,
        license=c.get(raw, "license", str, "license"),
        card=c.match(c.get(raw, "card", str, "card"), re.compile(r"^[a-z0-9.-]+\.md$"), "card", "a file name like 'name.md'"),
        input_size=tuple(input_size),
        transforms=presets["transforms"],
        postprocess=presets["postprocess"],
        exportable=c.get(raw, "exportable", bool, "exportable"),
        weights=MappingProxyType(weights),
        default_tag=default,
        classifier=tuple(classifier),
        source=source,
    )


def _parse_weights(c: _Check, tag: Any, spec: Any) -> Weights:
    p = f"weights.tags.{tag}"
    if not isinstance(tag, str) or not _TAG.match(tag):
        raise c.fail(p, "a tag must be lowercase letters, digits, '-' or '_'")
    c.no_unknown(spec, {f.name for f in dataclasses.fields(Weights)} - {"tag"}, p)
    metrics = []
    for i, m in enumerate(c.get(spec, "metrics", list, f"{p}.metrics", optional=True, default=[])):
        mp = f"{p}.metrics[{i}]"
        c.no_unknown(m, {f.name for f in dataclasses.fields(Metric)}, mp)
        metrics.append(Metric(
            dataset=c.get(m, "dataset", str, f"{mp}.dataset"),
            split=c.get(m, "split", str, f"{mp}.split"),
            metric=c.get(m, "metric", str, f"{mp}.metric"),
            value=c.get(m, "value", float, f"{mp}.value"),
            measured=c.get(m, "measured", str, f"{mp}.measured"),
        ))
    size = c.get(spec, "size", int, f"{p}.size")
    if size <= 0:
        raise c.fail(f"{p}.size", f"must be the file size in bytes (> 0), got {size}")
    return Weights(
        tag=tag,
        repo=c.match(c.get(spec, "repo", str, f"{p}.repo"), _REPO, f"{p}.repo", "a Hub repo id 'org/name'"),
        revision=c.match(c.get(spec, "revision", str, f"{p}.revision"), _HEX40, f"{p}.revision",
                         "the full 40-hex commit sha the weights were published at"),
        file=c.get(spec, "file", str, f"{p}.file"),
        sha256=c.match(c.get(spec, "sha256", str, f"{p}.sha256"), _HEX64, f"{p}.sha256", "64 lowercase hex characters"),
        size=size,
        source=c.get(spec, "source", str, f"{p}.source"),
        license=c.get(spec, "license", str, f"{p}.license"),
        metrics=tuple(metrics),
    )


# --------------------------------------------------------------------------------------- registry
class Registry:
    """A set of validated entries, from the shipped registry.yaml and any user files."""

    def __init__(self) -> None:
        self._entries: dict[str, ModelInfo] = {}

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
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise RegistryError(f"{source}: not valid YAML: {exc}") from None
        if not isinstance(doc, Mapping):
            raise RegistryError(f"{source}: must be a mapping with 'schema_version' and 'models'")
        version = doc.get("schema_version")
        if version != SCHEMA_VERSION:
            raise RegistryError(f"{source}: schema_version must be {SCHEMA_VERSION}, got {version!r}")
        unknown = set(doc) - {"schema_version", "models"}
        if unknown:
            raise RegistryError(f"{source}: unknown top-level field(s) {sorted(unknown)}; allowed: schema_version, models")
        models = doc.get("models") or {}
        if not isinstance(models, Mapping):
            raise RegistryError(f"{source}: 'models' must be a mapping of name -> entry")
        infos = [parse_entry(name, raw, source) for name, raw in models.items()]  # validate all first
        for info in infos:
            self.add(info, replace=replace)
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


def list_models(pattern: str = "*", *, task: str | None = None, pretrained: bool = False, tags: bool = False) -> list[str]:
    """Registered model names matching ``pattern`` (fnmatch).

    ``task`` filters by task, ``pretrained`` keeps models with published weights, ``tags`` lists
    ``name.tag`` for every weights tag instead of bare names.
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
