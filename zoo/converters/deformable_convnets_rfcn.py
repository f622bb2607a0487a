"""msracver/Deformable-ConvNets R-FCN and deformable R-FCN (``resnet_v1_101_rfcn`` and
``resnet_v1_101_rfcn_dcn``, MXNet) -> zoo ``rfcn`` (registry ``rfcn-r101`` and ``rfcn-dcn-r101``).

Checkpoints: ``rfcn_coco-0000.params`` / ``rfcn_dcn_coco-0000.params`` (and the ``*-%04d.params``
written by their training), read without MXNet by :mod:`zoo.converters.mxnet_params` (``arg:`` /
``aux:`` prefixes stripped; keys that still carry them are accepted too). Symbols:
``rfcn/symbols/resnet_v1_101_rfcn.py`` and ``resnet_v1_101_rfcn_dcn.py`` with
``experiments/rfcn/cfgs/resnet_v1_101_coco_trainval_rfcn{,_dcn}_end2end_ohem.yaml`` (81 classes, 12
anchors, ``CLASS_AGNOSTIC: true``; the two configs differ only in names), all at
msracver/Deformable-ConvNets@6aeda878a95bcb55eadffbe125804e730574de8d.

Key mapping (MXNet parameter -> zoo):

    conv1_weight, bn_conv1_*                          -> backbone.body.conv1.weight, backbone.body.bn1.*
    res{S}{B}_branch2{a,b,c}_weight                   -> backbone.body.layer{S-1}.{i}.conv{1,2,3}.weight
    bn{S}{B}_branch2{a,b,c}_*                         -> backbone.body.layer{S-1}.{i}.bn{1,2,3}.*
    res{S}a_branch1_weight, bn{S}a_branch1_*          -> backbone.body.layer{S-1}.0.downsample.{0,1}.*
    rpn_conv_3x3_*, rpn_cls_score_*, rpn_bbox_pred_*  -> rpn.head.conv.*, rpn.head.cls_logits.*, rpn.head.bbox_pred.*
    conv_new_1_*, rfcn_cls_*, rfcn_bbox_*             -> roi_heads.{conv_new_1,rfcn_cls,rfcn_bbox}.*
  deformable R-FCN only:
    res5{B}_branch2b_offset_{weight,bias}             -> backbone.body.layer4.{i}.conv2.conv_offset.*
    rfcn_cls_offset_t_*, rfcn_bbox_offset_t_*         -> roi_heads.rfcn_{cls,bbox}_pool.conv_offset.*

with S = 2..5 and block B = a, b, c (res2, res5: i = 0, 1, 2) or a, b1, b2, ... (res3 b1..b3, res4
b1..b22: i = 0, n); BN ``gamma``/``beta`` (``arg:``) and ``moving_mean``/``moving_var`` (``aux:``) ->
``weight``/``bias``/``running_mean``/``running_var`` (eps 1e-5 in both). MXNet convolution weights
are (out, in, kh, kw) as torch's, so every tensor passes unchanged except ``rfcn_bbox``:

- RPN: ``rpn_cls_score`` has 2A channels, A bg scores then A fg scores (the symbol's
  ``Reshape(0, 2, -1, 0)``), which is the layout ``zoo.layers.rfcn.RFCNRPNHead`` reads;
  ``rpn_bbox_pred`` is anchor-major (4 deltas per anchor) as torchvision's; anchors are ratio-major
  (``generate_anchors``: each ratio 0.5, 1, 2 for all scales 4..32 x 16) as torchvision's
  ``AnchorGenerator``; RPN deltas are unnormalised (``RPN_BBOX_WEIGHTS`` 1, box coder weights 1).
- ``rfcn_cls``: 7*7*81 channels, class-major PS maps over background + the 80 COCO classes in
  category-id order, as zoo's head (labels map to COCO ids with ``COCO_IDS``).
- ``rfcn_bbox``: training regresses deltas normalised by ``BBOX_STDS`` (0.1, 0.1, 0.2, 0.2)
  (``BBOX_NORMALIZATION_PRECOMPUTED``), as zoo's box coder weights (10, 10, 5, 5) expect. The
  ``do_checkpoint`` callback (``rfcn/core/callback.py``) additionally saves ``rfcn_bbox_weight_test`` =
  weight * s and ``rfcn_bbox_bias_test`` = bias * s + m, with s = ``mx.nd.repeat(stds, 49)`` and m the
  same for ``BBOX_MEANS`` (0), where ``stds`` = ``np.tile(BBOX_STDS, 2)`` has 8 entries and 49 =
  392 / 8: ``repeat`` without an axis repeats each element, so output channel ch (= coordinate
  ch // 49 of the 8 bg/fg deltas, bin ch % 49) is scaled by ``BBOX_STDS[(ch // 49) % 4]``. The
  reference tester loads with ``load_param(process=True)``, which replaces ``rfcn_bbox_*`` by the
  ``_test`` copies and decodes without stds. Here: if ``*_test`` keys are present they are un-scaled,
  (x - m) / s, and used (the plain training copies, equal up to rounding, are dropped); if only the
  plain ``rfcn_bbox_*`` are present they are taken as the unscaled training values, unless
  ``bbox_scaled=True`` says they were already replaced by the scaled copies (a file re-saved after
  ``load_param(process=True)``).

Deformable R-FCN's offset convs pass unchanged too. ``res5?_branch2b_offset`` (72 = 4 x 2 x 9
channels) feeds ``DeformableConvolution(num_deformable_group=4)``, whose kernel
(``rfcn/operator_cxx/nn/deformable_im2col.cuh``) reads channel 2 (i*3 + j) of deformable group g as the
y and 2 (i*3 + j) + 1 as the x offset of tap (i, j), group-major: the layout of zoo's / torchvision's
``deform_conv2d``. ``rfcn_cls_offset_t`` (2 x 49 x 81 channels) and ``rfcn_bbox_offset_t`` (2 x 49)
are PS-pooled without offsets (``output_dim`` 2 x 81 and 2, group size 7), so channel (c*7 + i)*7 + j
is the offset c of bin (i, j) with c = 2 m + (0: x, 1: y) for class m, which is what
:class:`zoo.ops.deform_ps_roi_pool.DeformPSRoIPool` reads. The ``rfcn_bbox`` scaling above applies as well
(the same ``do_checkpoint``); the bbox offsets are not scaled.

Every key must map and every zoo key must be present, else :class:`~zoo.errors.StateDictMismatchError`;
which symbol a file is comes from its keys (any ``*_offset`` key: the deformable one) unless ``dcn``
says so. These symbols have no aux states other than BatchNorm moving statistics, so nothing is ignored.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

from zoo.converters import remap_keys
from zoo.errors import StateDictMismatchError

__all__ = ["BBOX_MEANS", "BBOX_STDS", "UNITS", "bbox_scale", "block_module", "convert", "convert_key", "is_dcn_key", "reference_names"]

#: ``TRAIN.BBOX_STDS`` / ``BBOX_MEANS`` of the COCO R-FCN config
BBOX_STDS = (0.1, 0.1, 0.2, 0.2)
BBOX_MEANS = (0.0, 0.0, 0.0, 0.0)
#: bottleneck blocks per stage (res2..res5) of ResNet-v1-101
UNITS = (3, 4, 23, 3)
GROUP_SIZE = 7
_LAYOUT = "Deformable-ConvNets resnet_v1_101_rfcn"
_BN = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_var": "running_var"}
_HEADS = {"rpn_conv_3x3": "rpn.head.conv", "rpn_cls_score": "rpn.head.cls_logits",
          "rpn_bbox_pred": "rpn.head.bbox_pred", "conv_new_1": "roi_heads.conv_new_1",
          "rfcn_cls": "roi_heads.rfcn_cls", "rfcn_bbox": "roi_heads.rfcn_bbox"}
#: the offset convs of ``resnet_v1_101_rfcn_dcn`` (res5 deformable convs, deformable PS RoI pooling)
_DCN = {**{f"res5{b}_branch2b_offset": f"backbone.body.layer4.{i}.conv2.conv_offset" for i, b in enumerate("abc")},
        "rfcn_cls_offset_t": "roi_heads.rfcn_cls_pool.conv_offset",
        "rfcn_bbox_offset_t": "roi_heads.rfcn_bbox_pool.conv_offset"}
_BLOCK = re.compile(r"^(res|bn)([2-5])([a-z]|b\d+)_branch(1|2[abc])_(\w+)$")


def _block_index(block: str) -> int:
    return int(block[1:]) if len(block) > 1 else ord(block) - ord("a")


def convert_key(key: str) -> str | None:
    """zoo key for one MXNet parameter name (``arg:`` / ``aux:`` optional), None if not in the layout.
    ``rfcn_bbox_*_test`` map like ``rfcn_bbox_*`` (the values need :func:`bbox_scale`, see :func:`convert`)."""
    if key.startswith(("arg:", "aux:")):
        key = key[4:]
    if key.endswith("_test") and key.startswith("rfcn_bbox_"):
        key = key[:-len("_test")]
    if key == "conv1_weight":
        return "backbone.body.conv1.weight"
    if key.startswith("bn_conv1_") and key[len("bn_conv1_"):] in _BN:
        return f"backbone.body.bn1.{_BN[key[len('bn_conv1_'):]]}"
    for name, target in (*_HEADS.items(), *_DCN.items()):
        if key in (f"{name}_weight", f"{name}_bias"):
            return f"{target}.{key[len(name) + 1:]}"
    m = _BLOCK.match(key)
    if m is None:
        return None
    kind, stage, block, branch, param = m.groups()
    if kind == "res":
        if param != "weight":  # the backbone convolutions have no bias (no_bias=True)
            return None
    elif param not in _BN:
        return None
    module = block_module(stage, block, branch, conv=kind == "res")
    return None if module is None else f"{module}.{'weight' if kind == 'res' else _BN[param]}"


def block_module(stage: str, block: str, branch: str, *, conv: bool) -> str | None:
    """zoo module of one branch of the MSRA ResNet-101 naming shared by py-R-FCN and Deformable-ConvNets:
    stage ``2``..``5``, block ``a``, ``b``, ``c`` or ``b1``, ``b2``, ..., branch ``1`` (the projection, block
    ``a`` only) or ``2a``, ``2b``, ``2c``; ``conv`` the convolution, else its BatchNorm. None if not a branch."""
    index = _block_index(block)
    if branch == "1" and index != 0:
        return None
    if branch == "1":
        module = "downsample.0" if conv else "downsample.1"
    else:
        module = f"{'conv' if conv else 'bn'}{'abc'.index(branch[1]) + 1}"
    return f"backbone.body.layer{int(stage) - 1}.{index}.{module}"


def is_dcn_key(key: str) -> bool:
    """Whether an MXNet name (``arg:`` optional) belongs only to ``resnet_v1_101_rfcn_dcn``."""
    key = key[4:] if key.startswith(("arg:", "aux:")) else key
    return any(key in (f"{name}_weight", f"{name}_bias") for name in _DCN)


def reference_names(units: tuple[int, ...] = UNITS, dcn: bool = False) -> dict[str, str]:
    """zoo key -> MXNet name of every parameter of ``resnet_v1_101_rfcn`` (``resnet_v1_101_rfcn_dcn`` if
    ``dcn``), ``units`` blocks per stage."""
    names = ["conv1_weight"] + [f"bn_conv1_{p}" for p in _BN]
    for stage, n in enumerate(units, start=2):
        blocks = ["a", "b", "c"] if n == 3 else ["a"] + [f"b{i}" for i in range(1, n)]
        for i, block in enumerate(blocks):
            branches = ["1", "2a", "2b", "2c"] if i == 0 else ["2a", "2b", "2c"]
            for br in branches:
                names.append(f"res{stage}{block}_branch{br}_weight")
                names += [f"bn{stage}{block}_branch{br}_{p}" for p in _BN]
    names += [f"{h}_{p}" for h in (*_HEADS, *(_DCN if dcn else ())) for p in ("weight", "bias")]
    return {convert_key(n): n for n in names}  # type: ignore[misc]


def bbox_scale(channels: int, values: tuple[float, ...] = BBOX_STDS, group_size: int = GROUP_SIZE) -> Tensor:
    """Per-output-channel factor of ``do_checkpoint``: ``repeat(tile(values, n), k*k)`` with
    n = channels / (4 k*k), i.e. channel ch gets ``values[(ch // (k*k)) % 4]`` (float64)."""
    kk = group_size * group_size
    if channels % (4 * kk):
        raise StateDictMismatchError(f"rfcn_bbox has {channels} output channels; expected a multiple of "
                                     f"4 x {kk} (4 deltas x {group_size}x{group_size} bins per regression class)")
    tiled = torch.tensor(values, dtype=torch.float64).repeat(channels // (4 * kk))  # np.tile
    return tiled.repeat_interleave(kk)  # mx.nd.repeat(x, repeats=kk) without an axis


def _unscale(weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """Invert ``weight * s``, ``bias * s + m`` of ``do_checkpoint`` (computed in float64)."""
    if weight.shape[0] != bias.shape[0]:
        raise StateDictMismatchError(f"rfcn_bbox weight has {weight.shape[0]} output channels, bias {bias.shape[0]}")
    s = bbox_scale(bias.shape[0]).to(weight.device)
    m = bbox_scale(bias.shape[0], BBOX_MEANS).to(weight.device)
    w = (weight.double() / s.view(-1, *([1] * (weight.dim() - 1)))).to(weight.dtype)
    b = ((bias.double() - m) / s).to(bias.dtype)
    return w, b


def convert(state_dict: Mapping[str, Tensor], *, bbox_scaled: bool | None = None,
            dcn: bool | None = None) -> dict[str, Tensor]:
    """Map a Deformable-ConvNets ``resnet_v1_101_rfcn`` (``rfcn-r101``) or ``resnet_v1_101_rfcn_dcn``
    (``rfcn-dcn-r101``, ``dcn``; None = the deformable one if any ``*_offset`` key is present) parameter
    dict (names with or without ``arg:`` / ``aux:``) to zoo's ``rfcn`` keys, undoing ``do_checkpoint``'s
    bbox std scaling (see the module docstring; ``bbox_scaled`` None = decide from the ``*_test`` keys)."""
    state = {(k[4:] if k.startswith(("arg:", "aux:")) else k): v for k, v in state_dict.items()}
    if dcn is None:
        dcn = any(is_dcn_key(k) for k in state)
    layout = _LAYOUT + ("_dcn" if dcn else "")
    test = {p: state.pop(f"rfcn_bbox_{p}_test") for p in ("weight", "bias") if f"rfcn_bbox_{p}_test" in state}
    if len(test) == 1:
        raise StateDictMismatchError(f"not a {layout} state dict: only one of rfcn_bbox_weight_test / "
                                     "rfcn_bbox_bias_test is present")
    if test and bbox_scaled is False:
        raise StateDictMismatchError("bbox_scaled=False, but the checkpoint has the scaled rfcn_bbox_*_test copies")
    if test:  # the reference tester's weights (load_param(process=True)); drop the training copies
        state.pop("rfcn_bbox_weight", None)
        state.pop("rfcn_bbox_bias", None)
    required = reference_names(dcn=dcn)
    key_map = convert_key if dcn else (lambda k: None if is_dcn_key(k) else convert_key(k))
    out = remap_keys(state, key_map, layout=layout, required={} if test else required)
    if test:
        out["roi_heads.rfcn_bbox.weight"], out["roi_heads.rfcn_bbox.bias"] = _unscale(test["weight"], test["bias"])
        missing = [name for key, name in required.items() if key not in out]
        if missing:
            raise StateDictMismatchError(f"not a {layout} state dict: {', '.join(map(repr, missing))} missing")
    elif bbox_scaled:
        out["roi_heads.rfcn_bbox.weight"], out["roi_heads.rfcn_bbox.bias"] = _unscale(
            out["roi_heads.rfcn_bbox.weight"], out["roi_heads.rfcn_bbox.bias"])
    return out
