"""Converters from official checkpoint layouts to zoo's state-dict layout.

Each converter module defines ``convert(state_dict) -> state_dict``. The table below maps the public
converter names (used by ``zoo convert SOURCE IN OUT``) to those modules; users may add their own with
:func:`register_converter`.
"""
from __future__ import annotations

import difflib
import importlib
from typing import Callable, Mapping

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


def remap_keys(
    state_dict: Mapping[str, torch.Tensor],
    convert_key: Callable[[str], str | None],
    *,
    layout: str,
    required: Mapping[str, str] = {},
) -> dict[str, torch.Tensor]:
    """Rename every key with ``convert_key`` (None = not part of ``layout``); tensors pass unchanged.

    A ``{"state_dict": ...}`` checkpoint is unwrapped. Unknown keys, or a missing ``required`` zoo key
    (mapped to the original name it comes from, for the message), raise :class:`StateDictMismatchError`.
    """
    from zoo.errors import StateDictMismatchError

    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        new = convert_key(key)
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
