"""timm ``tf_efficientnet_cc_b0_4e`` / ``_b0_8e`` / ``_b1_8e`` (and ``efficientnet_cc_*``) -> zoo ``efficientnet_cc``.

zoo's :mod:`zoo.models.efficientnet_cc` keeps timm's module names, CondConv weight layout
(``conv_*.weight`` (E, out * in/groups * kh * kw)) and BatchNorm keys, so only the per-block routing is
renamed: ``blocks.S.i.routing_fn.{weight,bias}`` -> ``blocks.S.i.routing.fc.{weight,bias}``. A
``{"state_dict": ...}`` / ``{"model": ...}`` checkpoint is unwrapped and a DistributedDataParallel
``module.`` prefix stripped; keys outside the layout raise :class:`~zoo.errors.StateDictMismatchError`.
Build the model with ``tf_same_padding=True`` for the ``tf_`` weights (TensorFlow-trained), ``False``
for timm's PyTorch-padded ``efficientnet_cc_*``.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

from zoo.converters import remap_keys

__all__ = ["convert", "convert_key"]

_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_PATTERNS = (
    re.compile(r"conv_stem\.weight"),
    re.compile(rf"bn[12]\.{_BN}"),
    re.compile(r"conv_head\.weight"),
    re.compile(r"classifier\.(weight|bias)"),
    re.compile(r"blocks\.\d+\.\d+\.(conv_pw|conv_dw|conv_pwl)\.weight"),
    re.compile(rf"blocks\.\d+\.\d+\.bn[123]\.{_BN}"),
    re.compile(r"blocks\.\d+\.\d+\.se\.(conv_reduce|conv_expand)\.(weight|bias)"),
)
_ROUTING = re.compile(r"(blocks\.\d+\.\d+\.)routing_fn\.(weight|bias)")


def convert_key(key: str) -> str | None:
    """zoo key for a timm EfficientNet-CondConv key, or None when the key is not part of that layout."""
    key = key.removeprefix("module.")
    m = _ROUTING.fullmatch(key)
    if m:
        return f"{m.group(1)}routing.fc.{m.group(2)}"
    return key if any(p.fullmatch(key) for p in _PATTERNS) else None


def convert(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Map a timm EfficientNet-CondConv state dict to zoo's ``efficientnet_cc`` (tensors pass unchanged)."""
    out = remap_keys(state_dict, convert_key, layout="timm EfficientNet-CondConv",
                     required={"conv_stem.weight": "conv_stem.weight", "classifier.weight": "classifier.weight"})
    if not any(k.endswith("routing.fc.weight") for k in out):
        from zoo.errors import StateDictMismatchError
        raise StateDictMismatchError("not a timm EfficientNet-CondConv state dict: no 'blocks.*.routing_fn' "
                                     "(a plain EfficientNet has no CondConv blocks)")
    return out
