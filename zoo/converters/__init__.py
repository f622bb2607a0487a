"""Converters from official checkpoint layouts to zoo's state-dict layout.

Each converter module defines ``convert(state_dict) -> state_dict``. The table below maps the public
converter names (used by ``zoo convert SOURCE IN OUT``) to those modules; users may add their own with
:func:`register_converter`.
"""
from __future__ import annotations

import difflib
import importlib
import re
from typing import Any, Callable, Mapping

import torch

from zoo.errors import UnknownModelError

Converter = Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]

_BUILTIN = {
    "torchvision-deeplabv3": "zoo.converters.torchvision_deeplab",
    "kazuto-deeplabv2": "zoo.converters.kazuto_deeplab",
    "flownet-pytorch": "zoo.converters.flownet_pytorch",
    "flownet2": "zoo.converters.flownet2",
    "ptlflow-flownet": "zoo.converters.ptlflow_flownet",
    "mmflow-flownet": "zoo.converters.mmflow_flownet",
    "fyu-drn": "zoo.converters.fyu_drn",
    "mmseg-dmnet": "zoo.converters.mmseg_dmnet",
    "timm-efficientnet-cc": "zoo.converters.timm_efficientnet_cc",
    "hdfnet": "zoo.converters.hdfnet",
    "mmdet-rcnn": "zoo.converters.mmdet_rcnn",
    "adelaidet-condinst": "zoo.converters.adelaidet_condinst",
    "mmdet-condinst": "zoo.converters.mmdet_condinst",
    "deformable-convnets-rfcn": "zoo.converters.deformable_convnets_rfcn",
    "fyu-dilation": "zoo.converters.fyu_dilation",
    "couplenet-caffe": "zoo.converters.couplenet_caffe",
}
_USER: dict[str, Converter] = {}


Rules = tuple[tuple[re.Pattern[str], str], ...]
CONTAINERS = ("state_dict", "model", "module", "model_state")


def rules(*pairs: tuple[str, str]) -> Rules:
    """A layout's renaming table: ``(pattern, replacement)`` pairs, compiled; see :func:`apply_rules`."""
    return tuple((re.compile(pattern), replacement) for pattern, replacement in pairs)


def apply_rules(key: str, table: Rules) -> str | None:
    """``key`` (``module.`` stripped) renamed by the first rule of ``table`` whose pattern matches it
    (``re.sub`` with its replacement); None when no rule matches."""
    key = key.removeprefix("module.")
    for pattern, replacement in table:
        if pattern.match(key):
            return pattern.sub(replacement, key)
    return None


def checkpoint_tensors(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The state dict of a checkpoint: the mapping under a container key (:data:`CONTAINERS`, nested up to
    three deep) or the checkpoint itself, with DataParallel's ``module.`` prefixes removed."""
    state: Mapping[str, Any] = checkpoint
    for _ in range(3):
        inner = next((state[k] for k in CONTAINERS if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            break
        state = inner
    return {key.removeprefix("module."): value for key, value in state.items()}


def remap_keys(
    state_dict: Mapping[str, torch.Tensor],
    convert_key: Callable[[str], str | None] | Rules,
    *,
    layout: str,
    required: Mapping[str, str] = {},
    drop: str | re.Pattern[str] | None = None,
) -> dict[str, torch.Tensor]:
    """The shared remapper of the converters: rename every key of a checkpoint's state dict
    (:func:`checkpoint_tensors`) with ``convert_key`` (a function, None = not part of ``layout``, or a
    :func:`rules` table); tensors pass unchanged. Keys matching ``drop`` (not part of the inference network,
    e.g. training counters) are left out first.

    Unknown keys, or a missing ``required`` zoo key (mapped to the original name it comes from, for the
    message), raise :class:`StateDictMismatchError`.
    """
    from zoo.errors import StateDictMismatchError

    rename = (lambda key: apply_rules(key, convert_key)) if isinstance(convert_key, tuple) else convert_key
    dropped = re.compile(drop) if isinstance(drop, str) else drop
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in checkpoint_tensors(state_dict).items():
        if dropped is not None and dropped.match(key):
            continue
        new = rename(key)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise StateDictMismatchError(f"not a {layout} state dict: {len(unknown)} unknown keys, e.g. {unknown[:5]}")
    missing = [original for key, original in required.items() if key not in out]
    if missing:
        raise StateDictMismatchError(f"not a {layout} state dict: {', '.join(map(repr, missing))} missing")
    return out


def register_converter(name: str, fn: Converter) -> None:
    _USER[name] = fn


def list_converters() -> list[str]:
    return sorted({*_BUILTIN, *_USER})


def get_converter(name: str) -> Converter:
    if name in _USER:
        return _USER[name]
    if name not in _BUILTIN:
        close = difflib.get_close_matches(name, list_converters(), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownModelError(f"unknown converter {name!r}.{hint} Known: {', '.join(list_converters())}")
    return importlib.import_module(_BUILTIN[name]).convert
