"""The records of the model registry: frozen dataclasses of one entry (:class:`ModelInfo`) and its parts
(:class:`Paper`, :class:`Weights` and the files they name, :class:`Preset`, :class:`Metric`).

:mod:`zoo.registry_schema` builds them from YAML and validates every field; :mod:`zoo.registry` holds
them by name. A warm-start tag is obtainable when its host tag is, which only the registry holding both
knows, and so does the nearest entry with weights that a missing-weights message suggests:
:mod:`zoo.registry` installs itself with :func:`bind_registry` (the records sit below it).
"""
from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from zoo.errors import UnknownModelError

_registry: Callable[[], Any] | None = None


def bind_registry(get_registry: Callable[[], Any]) -> None:
    """``get_registry()``: the registry the records live in (``in``, ``get(name)``, iteration over entries)."""
    global _registry
    _registry = get_registry


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
        if self.warm_start is not None and _registry is not None:
            name, _, tag = self.warm_start.rpartition(".")
            registry = _registry()
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
    if _registry is None:
        return None
    candidates = [i for i in _registry() if i.default_tag is not None and i.name != info.name]
    if not candidates:
        return None
    def score(other: ModelInfo) -> tuple:
        return (other.task == info.task, other.arch == info.arch,
                difflib.SequenceMatcher(None, info.name, other.name).ratio())
    return max(candidates, key=score).name
