"""mmsegmentation DMNet checkpoints (``dmnet_r{50,101}-d8_*``) -> zoo ``dmnet``.

Source layout (mmseg ``EncoderDecoder`` with ``ResNetV1c`` / ``DMHead`` / ``FCNHead``; checkpoint files
are ``{"meta": ..., "state_dict": {...}}``):

    backbone.stem.{0,1,3,4,6,7}.*                    deep stem (conv, BN) x 3  -> backbone.deep_stem.{same}.*
    backbone.layer{1-4}.{i}.{conv1..3,bn1..3}.*      bottlenecks               -> unchanged
    backbone.layer{1-4}.0.downsample.{0,1}.*         projection shortcut       -> unchanged
    decode_head.dcm_modules.{j}.{filter_gen_conv, input_redu_conv.{conv,bn}, norm[, fusion_conv.{conv,bn}]}.*
    decode_head.bottleneck.{conv,bn}.*, decode_head.conv_seg.*                  -> unchanged
    auxiliary_head.convs.0.{conv,bn}.*, auxiliary_head.conv_seg.*               -> unchanged

Only the stem is renamed (zoo's ``ResNet.stem`` is a method, the convs are in ``deep_stem``). A
checkpoint without ``auxiliary_head`` keys loads into ``dmnet(aux=False)``. DataParallel ``module.``
prefixes are stripped; unknown keys raise :class:`~zoo.errors.StateDictMismatchError`.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

from zoo.converters import remap_keys

__all__ = ["convert", "convert_key"]

_STEM = re.compile(r"^backbone\.stem\.([0-9])\.(\w+)$")
_KNOWN = re.compile(
    r"^(backbone\.layer[1-4]\.\d+\.(conv[1-3]|bn[1-3]|downsample\.[01])"
    r"|decode_head\.(dcm_modules\.\d+\.(filter_gen_conv|input_redu_conv\.(conv|bn)|norm|fusion_conv\.(conv|bn))"
    r"|bottleneck\.(conv|bn)|conv_seg)"
    r"|auxiliary_head\.(convs\.\d+\.(conv|bn)|conv_seg))\.\w+$"
)


def convert_key(key: str) -> str | None:
    """zoo key for one mmseg DMNet key (``module.`` stripped), or None if it is not part of the layout."""
    key = key.removeprefix("module.")
    if m := _STEM.match(key):
        return f"backbone.deep_stem.{m.group(1)}.{m.group(2)}"
    return key if _KNOWN.match(key) else None


def convert(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Map an mmseg DMNet state dict (or ``{"meta", "state_dict"}`` checkpoint) to zoo's ``dmnet`` keys."""
    return remap_keys(
        state_dict, convert_key, layout="mmseg DMNet (ResNetV1c + DMHead)",
        required={"backbone.deep_stem.0.weight": "backbone.stem.0.weight",
                  "decode_head.conv_seg.weight": "decode_head.conv_seg.weight"},
    )
