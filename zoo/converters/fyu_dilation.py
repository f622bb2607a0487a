"""fyu/dilation Caffe weights (``dilation8_pascal_voc.caffemodel``) -> zoo ``dilation8``.

Source: ``models/dilation8_pascal_voc_deploy.prototxt`` of fyu/dilation (read with
:func:`zoo.converters.caffemodel.load_caffemodel`: ``{"<layer>.0": weight, "<layer>.1": bias}``). Layer
names map to zoo's module names:

    conv1_1 .. conv5_3, fc6, fc7          -> the same names
    fc-final                              -> final
    ct_conv1_1 .. ct_conv5_1, ct_fc1      -> context.ctx_conv1_1 .. context.ctx_conv5_1, context.ctx_fc1
    ct_final                              -> context.ctx_final

Blob shapes are PyTorch's (out, in, kh, kw). The fixed bilinear upsampling (``up.weight``) is not in the
Caffe file (predict.py interpolates outside the net); the converter adds zoo's bilinear kernel. Unknown
layers raise :class:`~zoo.errors.StateDictMismatchError`.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

from zoo.converters import remap_keys

__all__ = ["convert", "convert_key"]

_FRONT = re.compile(r"^(conv[1-5]_[1-3]|fc6|fc7)\.([01])$")
_CONTEXT = re.compile(r"^ct_(conv[1-5]_[12]|fc1|final)\.([01])$")
_LEAF = {"0": "weight", "1": "bias"}


def convert_key(key: str) -> str | None:
    """zoo key for one ``<layer>.<blob>`` key of the Caffe file, None if not part of the layout."""
    if m := _FRONT.match(key):
        return f"{m[1]}.{_LEAF[m[2]]}"
    if key in ("fc-final.0", "fc-final.1"):
        return f"final.{_LEAF[key[-1]]}"
    if m := _CONTEXT.match(key):
        return f"context.ctx_{m[1]}.{_LEAF[m[2]]}"
    return None


def convert(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    from zoo.models.drn import bilinear_kernel

    out = remap_keys(state_dict, convert_key, layout="fyu/dilation caffemodel",
                     required={"final.weight": "fc-final.0", "conv1_1.weight": "conv1_1.0"})
    classes = out["final.weight"].shape[0]
    out["up.weight"] = bilinear_kernel(16, dtype=out["final.weight"].dtype).expand(classes, 1, 16, 16).clone()
    return out
