"""open-mmlab/mmflow FlowNetS / FlowNetC checkpoints -> zoo ``flownets`` / ``flownetc``.

mmflow (``configs/_base_/models/flownet{s,c}.py``) splits FlowNet into encoder / decoder modules:

- FlowNetS ``encoder.layers.{0..5}.layers.{j}.conv`` = conv1, conv2, conv3 / conv3_1, conv4 / conv4_1,
  conv5 / conv5_1, conv6 / conv6_1 (``j`` = 0 / 1; ``.bn`` with a norm config).
- FlowNetC ``encoder.layers.{0,1,2}.layers.0.conv`` = conv1..conv3 (shared by both frames),
  ``corr_encoder.conv_redir.conv`` = conv_redir, ``corr_encoder.layers.0.layers.0.conv`` = conv3_1,
  ``corr_encoder.layers.{1,2,3}.layers.{0,1}.conv`` = conv4 / conv4_1 .. conv6 / conv6_1.
- Decoder ``decoder.decoders.level{l}.pred_out`` = predict_flow{l},
  ``.deconv_out.deconvs.0`` = deconv{l-1}, ``.upsample_pred.deconvs.0`` = upsampled_flow{l}_to_{l-1}.

mmflow's configs set ``deconv_bias=True, pred_bias=True`` and ``upsample_bias`` False (FlowNetS) /
True (FlowNetC), and FlowNetC's ``CorrEncoder(scaled=False)`` does NOT divide the correlation by C
(mmcv ``Correlation(kernel_size=1, max_displacement=10, dilation_patch=2)``: 21 x 21 displacements
2 px apart, channel ``dy * 21 + dx`` as zoo's). Build the target with :func:`model_args`:
``flownets(deconv_bias=True, predict_bias=True)`` or ``flownetc(deconv_bias=True, predict_bias=True,
upsample_bias=True, corr_normalize=False)``.

Inputs: mmflow normalises with ``mean=[0, 0, 0], std=[255, 255, 255], to_rgb=False``: BGR frames in
[0, 1] without mean subtraction, i.e. transforms args ``{mean: null, channel_order: bgr}``.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

from zoo.converters.flownet_pytorch import check_layout, unwrap
from zoo.errors import StateDictMismatchError

__all__ = ["convert", "model_args"]

_S_ENCODER = {(0, 0): "conv1", (1, 0): "conv2", (2, 0): "conv3", (2, 1): "conv3_1", (3, 0): "conv4",
              (3, 1): "conv4_1", (4, 0): "conv5", (4, 1): "conv5_1", (5, 0): "conv6", (5, 1): "conv6_1"}
_C_ENCODER = {(0, 0): "conv1", (1, 0): "conv2", (2, 0): "conv3"}
_C_CORR = {(0, 0): "conv3_1", (1, 0): "conv4", (1, 1): "conv4_1", (2, 0): "conv5", (2, 1): "conv5_1",
           (3, 0): "conv6", (3, 1): "conv6_1"}
_CONV = re.compile(r"^(encoder|corr_encoder)\.layers\.(\d+)\.layers\.(\d+)\.(conv|bn)\.(\w+)$")
_DEC = re.compile(r"^decoder\.decoders\.level([2-6])\.(pred_out|deconv_out\.deconvs\.0|upsample_pred\.deconvs\.0)\.(\w+)$")


def is_flownetc(state_dict: Mapping[str, Tensor]) -> bool:
    return any(k.startswith("corr_encoder.") for k in state_dict)


def model_args(state_dict: Mapping[str, Tensor]) -> dict[str, object]:
    """Constructor arguments (besides the arch: ``flownetc`` when :func:`is_flownetc`) for mmflow weights."""
    args: dict[str, object] = {"deconv_bias": True, "predict_bias": True}
    if any(k.endswith("upsample_pred.deconvs.0.bias") for k in state_dict):
        args["upsample_bias"] = True
    if is_flownetc(state_dict):
        args["corr_normalize"] = False
    if any(".bn." in k for k in state_dict):
        args["batch_norm"] = True
    return args


def _new_key(key: str, corr: bool) -> str | None:
    if key == "corr_encoder.conv_redir.conv.weight" or key == "corr_encoder.conv_redir.conv.bias":
        return "conv_redir.0." + key.rsplit(".", 1)[1]
    if key.startswith("corr_encoder.conv_redir.bn."):
        return "conv_redir.1." + key.rsplit(".", 1)[1]
    m = _CONV.match(key)
    if m:
        part, i, j, kind, leaf = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4), m.group(5)
        table = (_C_CORR if part == "corr_encoder" else _C_ENCODER) if corr else (_S_ENCODER if part == "encoder" else {})
        name = table.get((i, j))
        return None if name is None else f"{name}.{0 if kind == 'conv' else 1}.{leaf}"
    m = _DEC.match(key)
    if m:
        level, part, leaf = int(m.group(1)), m.group(2), m.group(3)
        if part == "pred_out":
            return f"predict_flow{level}.{leaf}"
        if level == 2:
            return None
        if part.startswith("deconv_out"):
            return f"deconv{level - 1}.0.{leaf}"
        return f"upsampled_flow{level}_to_{level - 1}.{leaf}"
    return None


def convert(state_dict: Mapping) -> dict[str, Tensor]:
    """Map an mmflow FlowNetS / FlowNetC checkpoint (``{"meta", "state_dict"}`` or bare) to zoo's layout."""
    sd = unwrap(state_dict, "mmflow")
    corr = is_flownetc(sd)
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in sd.items():
        new = _new_key(key, corr)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise StateDictMismatchError(f"not an mmflow FlowNetS/FlowNetC state dict: unexpected keys {unknown[:5]}")
    check_layout(out, "mmflow")
    return out
