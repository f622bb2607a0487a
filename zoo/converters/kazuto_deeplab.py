"""kazuto1011/deeplab-pytorch DeepLab v2 checkpoints -> zoo ``deeplabv2``.

Source layout (``libs/models/{msc,deeplabv2,resnet}.py``; e.g. deeplabv2_resnet101_msc-vocaug-20000.pth,
converted there from the authors' Caffe model): ``MSC(base=DeepLabV2(...))`` with

    base.layer1.conv1.{conv,bn}                      stem 7x7 conv + BN        -> backbone.conv1 / bn1
    base.layer{L}.block{B}.reduce.{conv,bn}          1x1 (stride here, MSRA)   -> backbone.layer{L-1}.{B-1}.conv1 / bn1
    base.layer{L}.block{B}.conv3x3.{conv,bn}         3x3 (dilated)             -> ... .conv2 / bn2
    base.layer{L}.block{B}.increase.{conv,bn}        1x1 expand                -> ... .conv3 / bn3
    base.layer{L}.block1.shortcut.{conv,bn}          projection shortcut       -> ... .downsample.0 / downsample.1
    base.aspp.c{i}.{weight,bias}                     ASPP branch i (rate 6, 12, 18, 24) -> aspp.convs.{i}

for L = 2..5 (res2..res5). BN tensors are ``weight, bias, running_mean, running_var`` and, in
checkpoints saved by PyTorch, ``num_batches_tracked`` (kept; ``FrozenBatchNorm2d`` ignores it).
Checkpoints of the bare ``DeepLabV2`` (no ``base.`` prefix) and ``{"state_dict": ...}`` /
DataParallel ``module.`` wrappers are accepted too. Unknown keys raise
:class:`~zoo.errors.StateDictMismatchError`.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

from zoo.converters import remap_keys

__all__ = ["convert", "convert_key"]

_BRANCH = {"reduce": "1", "conv3x3": "2", "increase": "3"}
_BLOCK = re.compile(r"^layer([2-5])\.block(\d+)\.(reduce|conv3x3|increase|shortcut)\.(conv|bn)\.(\w+)$")
_STEM = re.compile(r"^layer1\.conv1\.(conv|bn)\.(\w+)$")
_ASPP = re.compile(r"^aspp\.c(\d+)\.(weight|bias)$")


def convert_key(key: str) -> str | None:
    """zoo key for one source key (with or without the ``base.`` prefix), or None if unknown."""
    for prefix in ("module.", "base."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    if m := _STEM.match(key):
        part, tensor = m.groups()
        return f"backbone.{'conv1' if part == 'conv' else 'bn1'}.{tensor}"
    if m := _BLOCK.match(key):
        layer, block, branch, part, tensor = m.groups()
        base = f"backbone.layer{int(layer) - 1}.{int(block) - 1}."
        if branch == "shortcut":
            return base + f"downsample.{0 if part == 'conv' else 1}.{tensor}"
        return base + f"{part}{_BRANCH[branch]}.{tensor}"
    if m := _ASPP.match(key):
        return f"aspp.convs.{m.group(1)}.{m.group(2)}"
    return None


def convert(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Map a kazuto1011 ``DeepLabV2_ResNet101_MSC`` (or bare ``DeepLabV2``) state dict to zoo's
    ``deeplabv2`` keys; tensors are passed through unchanged (same shapes and layouts)."""
    return remap_keys(
        state_dict, convert_key, layout="kazuto1011 DeepLabV2",
        required={"backbone.conv1.weight": "base.layer1.conv1.conv.weight", "aspp.convs.0.weight": "base.aspp.c0.weight"},
    )
