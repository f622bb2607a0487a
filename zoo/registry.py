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

import difflib
import fnmatch
from importlib import resources
from pathlib import Path
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from zoo.archs import get_arch
from zoo.errors import RegistryError, UnknownModelError
from zoo.registry_records import (HubFile, ManualFile, Metric, ModelInfo, Paper, Preset, UpstreamFile,  # noqa: F401
                                  Weights, bind_registry, nearest_pretrained, no_weights_message, thaw)
from zoo.registry_schema import (SCHEMA_VERSION, SUPPORTED_SCHEMAS, TASKS, Tables, load_yaml,  # noqa: F401
                                 parse_tables, parse_entry)

if TYPE_CHECKING:
    from torch import nn


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
        doc = load_yaml(text, source)
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
        tables = self.tables.merged(parse_tables(doc, source))
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


bind_registry(default_registry)
