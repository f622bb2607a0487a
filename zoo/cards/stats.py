"""Parameter counts and FLOPs of registry models, computed from the models, cached in ``model_stats.json``.

- Parameters: the entry's constructor is called under ``torch.device("meta")`` (no memory, no
  initialisation) and its unique parameters are summed.
- FLOPs: one forward pass of a batch of one tensor of shape ``(1, *info.input_size)`` in eval mode
  under :class:`torch.utils.flop_counter.FlopCounterMode`. The input is used as given, so an optical
  flow entry with ``input_size: [6, H, W]`` gets its stacked frame pair. The pass runs on the meta
  device (shapes only, no arithmetic); a model that cannot run there (data-dependent code, an op
  without a meta kernel) is built and run on the CPU instead, and the device used is recorded.

Interpretation (write it next to any number quoted from here): FlopCounterMode counts 2 FLOPs per
multiply-accumulate of convolutions (incl. transposed), matrix products and attention; zoo adds
torchvision's ``deform_conv2d`` (the fast path of :mod:`zoo.ops.deform_conv`), counted like a
convolution of the same shapes. Element-wise ops, normalisation, pooling, interpolation, bilinear
sampling and the offset/mask products of deformable convolution are not counted. Papers that quote
"FLOPs" usually mean multiply-accumulates: halve our GFLOPs to compare with them.

``scripts/sync_stats.py`` writes ``zoo/model_stats.json`` (shipped with the package) for every entry
of the shipped ``registry.yaml``, keyed by name with a fingerprint of ``arch``, ``args`` and
``input_size``; :func:`model_stats` reads it so that ``zoo list`` and the site never build models,
and computes (and memoises) the numbers of entries it lacks, such as a user's own registry entries.
``tests/test_stats.py`` fails when the file is missing an entry, is stale, or disagrees with a recount.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from zoo.errors import ZooError
from zoo.io import write_atomic
from zoo.registry import ModelInfo, default_registry, thaw

STATS_FILE = "model_stats.json"
FLOP_CONVENTION = ("FlopCounterMode FLOPs (2 per multiply-accumulate of conv, matmul, attention; torchvision "
                   "deform_conv2d counted as a conv), batch 1 at input_size, eval mode")


@dataclasses.dataclass(frozen=True)
class ModelStats:
    """Size and cost of one registry entry."""

    params: int
    flops: int
    input_size: tuple[int, ...]
    device: str  # where the FLOP-counting forward ran: "meta" or "cpu"
    fingerprint: str

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    def to_json(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "params": self.params, "flops": self.flops,
                "input_size": list(self.input_size), "device": self.device}


def fingerprint(info: ModelInfo) -> str:
    """Short hash of what the numbers depend on in the registry: arch, args and input_size."""
    key = json.dumps({"arch": info.arch, "args": thaw(info.args), "input_size": list(info.input_size)},
                     sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(key.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------ counting
def _build(info: ModelInfo, device: str) -> torch.nn.Module:
    from zoo.factory import build_model

    with torch.device(device):
        model = build_model(info)
    return model.eval()


def count_parameters(info: ModelInfo) -> int:
    """Parameters of the entry's architecture, counted on the meta device (shared parameters once)."""
    return sum(p.numel() for p in _build(info, "meta").parameters())


def _deform_conv2d_flops(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    # torchvision::deform_conv2d(input, weight, offset, mask, bias, ...): like a convolution, 2 FLOPs per
    # multiply-accumulate: every output element sums C_in/groups * kh * kw products.
    return 2 * math.prod(out_shape) * math.prod(weight_shape[1:])


def _custom_flop_formulas() -> dict[Any, Any]:
    import torchvision  # noqa: F401  (registers torch.ops.torchvision)

    formulas = {}
    if hasattr(torch.ops.torchvision, "deform_conv2d"):
        formulas[torch.ops.torchvision.deform_conv2d] = _deform_conv2d_flops
    return formulas


def forward_flops(model: torch.nn.Module, inputs: tuple) -> int:
    """FLOPs of ``model(*inputs)`` (no grad) with FlopCounterMode and zoo's formulas (see FLOP_CONVENTION)."""
    counter = FlopCounterMode(display=False, custom_mapping=_custom_flop_formulas())
    with torch.no_grad(), counter:
        model(*inputs)
    return int(counter.get_total_flops())


def count_flops(info: ModelInfo) -> tuple[int, str]:
    """FLOPs of one forward pass on :func:`zoo.factory.example_inputs` (batch 1 at ``input_size``), and
    the device it ran on ("meta"/"cpu").

    Tries the meta device first; falls back to a CPU pass on a random input (batch 1) when the model
    cannot run on meta. Raises :class:`ZooError` naming the entry when neither works.
    """
    from zoo.factory import example_inputs

    try:
        return forward_flops(_build(info, "meta"), example_inputs(info, device="meta", random=False)), "meta"
    except Exception as meta_exc:  # noqa: BLE001  (any failure on meta means: count on the CPU)
        meta_error = f"{type(meta_exc).__name__}: {meta_exc}"
    try:
        torch.manual_seed(0)
        return forward_flops(_build(info, "cpu"), example_inputs(info)), "cpu"
    except Exception as exc:  # noqa: BLE001
        raise ZooError(
            f"cannot count FLOPs of {info.name!r} at input_size {list(info.input_size)}: the forward pass "
            f"failed on the meta device ({meta_error.splitlines()[0]}) and on the CPU "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc


def compute_stats(info: ModelInfo) -> ModelStats:
    """Count parameters and FLOPs of ``info`` now (builds the model; see the module docstring)."""
    flops, device = count_flops(info)
    return ModelStats(count_parameters(info), flops, tuple(info.input_size), device, fingerprint(info))


# ------------------------------------------------------------------------------------ the cache
def stats_path() -> Path:
    """Where the shipped stats file lives (inside the package)."""
    return Path(str(resources.files("zoo").joinpath(STATS_FILE)))


def load_cache(path: str | Path | None = None) -> dict[str, ModelStats]:
    """The cached stats by entry name (empty when the file is absent)."""
    path = Path(path) if path is not None else stats_path()
    if not path.is_file():
        return {}
    doc = json.loads(path.read_text(encoding="utf-8"))
    return {name: ModelStats(params=int(s["params"]), flops=int(s["flops"]), input_size=tuple(s["input_size"]),
                             device=s["device"], fingerprint=s["fingerprint"])
            for name, s in doc.get("models", {}).items()}


_CACHE: dict[str, ModelStats] | None = None
_COMPUTED: dict[tuple[str, str], ModelStats] = {}


def model_stats(info: ModelInfo) -> ModelStats:
    """Stats of ``info``: from ``model_stats.json`` when its fingerprint matches, else computed once."""
    global _CACHE
    if _CACHE is None:
        _CACHE = load_cache()
    key = fingerprint(info)
    cached = _CACHE.get(info.name)
    if cached is not None and cached.fingerprint == key:
        return cached
    if (info.name, key) not in _COMPUTED:
        _COMPUTED[(info.name, key)] = compute_stats(info)
    return _COMPUTED[(info.name, key)]


def _shipped() -> list[ModelInfo]:
    return [i for i in default_registry() if i.source == "registry.yaml"]


def stats_problems(path: str | Path | None = None) -> list[str]:
    """Why ``model_stats.json`` does not match the shipped registry (empty when current)."""
    cache = load_cache(path)
    infos = _shipped()
    out = []
    for info in infos:
        s = cache.get(info.name)
        if s is None:
            out.append(f"{info.name}: no entry in {STATS_FILE}; run `python scripts/sync_stats.py`")
        elif s.fingerprint != fingerprint(info):
            out.append(f"{info.name}: {STATS_FILE} is stale (arch, args or input_size changed); "
                       "run `python scripts/sync_stats.py`")
    for name in sorted(set(cache) - {i.name for i in infos}):
        out.append(f"{name}: in {STATS_FILE} but not in registry.yaml; run `python scripts/sync_stats.py`")
    return out


def sync_stats(path: str | Path | None = None, *, force: bool = False, write: bool = True) -> list[str]:
    """Recompute missing or stale entries (every entry with ``force``), drop orphans; returns changed names."""
    global _CACHE
    path = Path(path) if path is not None else stats_path()
    old = load_cache(path)
    new: dict[str, ModelStats] = {}
    for info in _shipped():
        s = old.get(info.name)
        new[info.name] = s if s is not None and s.fingerprint == fingerprint(info) and not force else compute_stats(info)
    changed = sorted(n for n in set(old) | set(new) if old.get(n) != new.get(n))
    models = ",\n".join(f"  {json.dumps(n)}: {json.dumps(new[n].to_json())}" for n in sorted(new))
    text = (f'{{\n "generated_by": "scripts/sync_stats.py",\n "flops": {json.dumps(FLOP_CONVENTION)},\n'
            f' "models": {{\n{models}\n }}\n}}\n')
    if write and (changed or not path.is_file() or path.read_text(encoding="utf-8") != text):
        write_atomic(path, text)
        _CACHE = None
    return changed
