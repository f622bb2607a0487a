"""fyu/drn checkpoints (DRN classification models and ``DRNSeg``) -> zoo ``drn`` / ``drn_seg``.

Source layouts (fyu/drn ``drn.py``, ``segment.py``):

- classification (``drn_c_26-ddedf421.pth``, ``drn_d_22-4bd2f8ea.pth``, ...): ``conv1``, ``bn1`` (C) or
  ``layer0.{0,1}`` (D), ``layer1..8.*``, ``fc.{weight,bias}`` (1x1 conv) -- the same keys as zoo's
  ``DRN``; DRN-A-50 uses torchvision ResNet-50 keys (``fc`` is ``nn.Linear``), also unchanged;
- segmentation (``drn_d_22_cityscapes.pth``, ...): ``DRNSeg`` with ``base = nn.Sequential(*children[:-2])``
  of the DRN, so ``base.{i}.*`` indexes the DRN's children in registration order -- D: ``layer0,
  layer1, ..., layer8``; C: ``conv1, bn1, relu, layer1, ..., layer8`` (index 2 is the parameter-free
  ReLU) -- plus ``seg.{weight,bias}`` and ``up.weight`` (the frozen bilinear deconvolution).
  zoo names them ``base.layerL`` / ``base.conv1`` / ``base.bn1``; ``seg`` and ``up`` are unchanged.
  The variant is recognised from ``base.0``: a conv weight at ``base.0.weight`` is DRN-C, a
  Sequential (``base.0.0.weight``) DRN-D.

The 2017 checkpoints were saved before BatchNorm had ``num_batches_tracked``: the converter adds it
(0, int64) for every BatchNorm that lacks it, so the result loads strictly. ``{"state_dict": ...}``
wrappers and DataParallel ``module.`` prefixes are accepted. Tensors are passed through unchanged.
Unknown keys raise :class:`~zoo.errors.StateDictMismatchError`.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

from zoo.converters import checkpoint_tensors, remap_keys
from zoo.errors import StateDictMismatchError

__all__ = ["convert", "convert_key"]

_SEG_CHILDREN = {
    "d": [f"layer{i}" for i in range(9)],
    "c": ["conv1", "bn1", "relu"] + [f"layer{i}" for i in range(1, 9)],
}
_CLS = re.compile(r"^(conv1|bn1|layer[0-8]|fc)\.[\w.]+$")
_SEG_BASE = re.compile(r"^base\.(\d+)\.([\w.]+)$")
_SEG_HEAD = re.compile(r"^(seg\.(weight|bias)|up\.weight)$")


def _variant(state_dict: Mapping[str, Tensor]) -> str | None:
    if "base.0.0.weight" in state_dict:
        return "d"
    if "base.0.weight" in state_dict:
        return "c"
    return None


def convert_key(key: str, variant: str | None = None) -> str | None:
    """zoo key for one fyu/drn key (``module.`` stripped); ``variant`` ('c'/'d') is needed for
    ``DRNSeg`` keys. None if the key is not part of the fyu/drn layout."""
    key = key.removeprefix("module.")
    if _CLS.match(key) or _SEG_HEAD.match(key):
        return key
    m = _SEG_BASE.match(key)
    if m and variant in _SEG_CHILDREN:
        children = _SEG_CHILDREN[variant]
        index = int(m.group(1))
        if index < len(children) and children[index] != "relu":
            return f"base.{children[index]}.{m.group(2)}"
    return None


def convert(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Map a fyu/drn DRN or DRNSeg state dict to zoo's ``drn`` / ``drn_seg`` keys (see the module docstring)."""
    stripped = checkpoint_tensors(state_dict)
    variant = _variant(stripped)
    out = remap_keys(stripped, lambda key: convert_key(key, variant), layout="fyu/drn DRN or DRNSeg")
    if not any(k.startswith(("base.", "fc.", "layer")) for k in out):
        raise StateDictMismatchError("not a fyu/drn state dict: no 'layer*', 'fc.*' or 'base.*' keys found")
    for key in [k for k in out if k.endswith(".running_mean")]:
        counter = key[: -len("running_mean")] + "num_batches_tracked"
        out.setdefault(counter, torch.tensor(0, dtype=torch.long))
    return out
