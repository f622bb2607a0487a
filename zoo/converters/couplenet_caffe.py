"""tshizys/CoupleNet Caffe weights (the released VOC 07+12 ResNet-101 model) -> zoo ``couplenet``
(registry ``couplenet-r101``).

Source: ``test_agnostic.prototxt`` / ``train_agnostic_ohem.prototxt`` and ``lib/fast_rcnn/train.py`` of
tshizys/CoupleNet@3187614dc35c4f52e560c6ad9f2550d37bae7b81 (py-R-FCN's ResNet-101 with the CoupleNet head),
read without Caffe by :func:`zoo.converters.caffemodel.load_caffemodel`: ``{"<layer>.<blob>": tensor}``.

Key mapping (Caffe layer . blob -> zoo):

    conv1.0                                         -> backbone.body.conv1.weight (input channels BGR -> RGB)
    bn_conv1.{0,1,2}, scale_conv1.{0,1}             -> backbone.body.bn1.{running_mean, running_var}, .{weight, bias}
    res{S}{B}_branch2{a,b,c}.0                      -> backbone.body.layer{S-1}.{i}.conv{1,2,3}.weight
    bn{S}{B}_branch2{a,b,c}.*, scale{S}{B}_...      -> backbone.body.layer{S-1}.{i}.bn{1,2,3}.*
    res{S}a_branch1.0, bn{S}a_branch1.*, scale...   -> backbone.body.layer{S-1}.0.downsample.{0,1}.*
    rpn_conv/3x3, rpn_cls_score, rpn_bbox_pred      -> rpn.head.conv, rpn.head.cls_logits, rpn.head.bbox_pred
    conv_new_1                                      -> roi_heads.conv_new_1
    local_cls, local_bbox                           -> roi_heads.rfcn_cls, roi_heads.rfcn_bbox (the PS score maps)
    conv/local_cls_score                            -> roi_heads.local_cls_conv
    conv_pool5, conv_pool5_1                        -> roi_heads.conv_pool5, roi_heads.conv_pool5_1
    global_cls_score, global_bbox_pred              -> roi_heads.global_cls_score, roi_heads.global_bbox_pred

(blob 0 = weight, 1 = bias of a convolution) with S = 2..5 and block B = a, b, c (res2, res5: i = 0, 1, 2) or
a, b1, b2, ... (res3 b1..b3, res4 b1..b22: i = 0, n). Values:

- Caffe's ``BatchNorm`` stores blob 0 = sum of means, 1 = sum of variances and 2 = their common scale
  factor (shape (1,)); the statistics are blob / factor (0 when the factor is 0, as Caffe's
  ``BatchNormLayer``), eps 1e-5 (Caffe's default, the prototxt sets none; torchvision's
  ``FrozenBatchNorm2d`` uses 1e-5 too). The ``Scale`` layer (``bias_term: true``) carries gamma (0) and
  beta (1).
- ``conv1``: py-R-FCN feeds BGR images (``PIXEL_MEANS`` 102.9801, 115.9465, 122.7717 BGR); zoo feeds RGB, so
  the input-channel axis of the first convolution is reversed (the entry's mean is the same means, RGB).
- RPN: ``rpn_cls_score`` has 18 channels, 9 bg scores then 9 fg scores (``Reshape(0, 2, -1, 0)``), the layout
  ``zoo.layers.rfcn.RFCNRPNHead`` reads; ``rpn_bbox_pred`` is anchor-major. The authors' snapshot
  (``SolverWrapper.snapshot`` in ``lib/fast_rcnn/train.py``) multiplies ``rpn_bbox_pred`` by
  ``RPN_NORMALIZE_STDS`` before saving, so the file holds raw deltas: torchvision's RPN box coder weights
  (1, 1, 1, 1) read them unchanged.
- Head boxes: the same snapshot multiplies ``local_bbox`` (weight and bias) per output channel by
  ``np.repeat(stds, 392 / 8)`` and ``global_bbox_pred`` by ``stds`` (bias: ``* stds + means``), with
  ``stds`` = ``np.tile(BBOX_NORMALIZE_STDS, 2)`` = (0.1, 0.1, 0.2, 0.2) x 2 and means 0 (class-agnostic:
  two regression classes, py-R-FCN ``lib/roi_data_layer/roidb.py``). zoo's head decodes with box coder
  weights (10, 10, 5, 5), i.e. expects the normalised deltas the net was trained on, so both are divided
  back (``bbox_scaled=False`` takes a file whose box layers were not scaled, e.g. a raw solver state).
- Every other tensor passes unchanged (Caffe convolution blobs are (out, in, kh, kw) like torch's; a
  legacy 4-D (1, 1, 1, C) vector blob is flattened).

Every key must map and every zoo key must be present, else :class:`~zoo.errors.StateDictMismatchError`.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

from zoo.converters import remap_keys
from zoo.converters.deformable_convnets_rfcn import BBOX_MEANS, UNITS, bbox_scale, block_module
from zoo.errors import StateDictMismatchError

__all__ = ["convert", "convert_key", "reference_names"]

_LAYOUT = "tshizys/CoupleNet ResNet-101 caffemodel"
_HEADS = {"rpn_conv/3x3": "rpn.head.conv", "rpn_cls_score": "rpn.head.cls_logits",
          "rpn_bbox_pred": "rpn.head.bbox_pred", "conv_new_1": "roi_heads.conv_new_1",
          "local_cls": "roi_heads.rfcn_cls", "local_bbox": "roi_heads.rfcn_bbox",
          "conv/local_cls_score": "roi_heads.local_cls_conv", "conv_pool5": "roi_heads.conv_pool5",
          "conv_pool5_1": "roi_heads.conv_pool5_1", "global_cls_score": "roi_heads.global_cls_score",
          "global_bbox_pred": "roi_heads.global_bbox_pred"}
_CONV = {"0": "weight", "1": "bias"}
_BN = {"0": "running_mean", "1": "running_var"}  # blob 2, the factor, is consumed by convert
_SCALE = {"0": "weight", "1": "bias"}
_NORM_WEIGHT = re.compile(r"\.(bn\d|downsample\.1)\.weight$")
_BLOCK = re.compile(r"^(res|bn|scale)([2-5])([a-z]|b\d+)_branch(1|2[abc])\.(\d)$")


def convert_key(key: str) -> str | None:
    """zoo key for one ``<layer>.<blob>`` key of the Caffe file, None if not part of the layout. A
    ``BatchNorm`` factor blob (``.2``) maps to the module's ``running_mean`` key's module + ``.factor``,
    which :func:`convert` consumes."""
    layer, _, blob = key.rpartition(".")
    if layer in _HEADS:
        return f"{_HEADS[layer]}.{_CONV[blob]}" if blob in _CONV else None
    if layer == "conv1":
        return "backbone.body.conv1.weight" if blob == "0" else None
    if layer in ("bn_conv1", "scale_conv1"):
        leaf = _leaf(layer.split("_")[0], blob)
        return f"backbone.body.bn1.{leaf}" if leaf else None
    m = _BLOCK.match(key)
    if m is None:
        return None
    kind, stage, block, branch, blob = m.groups()
    leaf = ("weight" if blob == "0" else None) if kind == "res" else _leaf(kind, blob)  # convs: bias_term false
    module = block_module(stage, block, branch, conv=kind == "res")
    return None if leaf is None or module is None else f"{module}.{leaf}"


def _leaf(kind: str, blob: str) -> str | None:
    if kind == "bn":
        return _BN.get(blob) or ("factor" if blob == "2" else None)
    return _SCALE.get(blob)


def reference_names(units: tuple[int, ...] = UNITS, factors: bool = False) -> dict[str, str]:
    """zoo key -> Caffe ``<layer>.<blob>`` of every parameter and BN statistic of the released CoupleNet
    ResNet-101; ``factors`` adds the BN factor blobs ``.2`` under their ``<module>.factor`` pseudo keys."""
    names = ["conv1.0", "bn_conv1.0", "bn_conv1.1", "scale_conv1.0", "scale_conv1.1"] + (["bn_conv1.2"] if factors else [])
    for stage, n in enumerate(units, start=2):
        blocks = ["a", "b", "c"] if n == 3 else ["a"] + [f"b{i}" for i in range(1, n)]
        for i, block in enumerate(blocks):
            for br in (["1", "2a", "2b", "2c"] if i == 0 else ["2a", "2b", "2c"]):
                names += [f"res{stage}{block}_branch{br}.0", f"bn{stage}{block}_branch{br}.0",
                          f"bn{stage}{block}_branch{br}.1", f"scale{stage}{block}_branch{br}.0",
                          f"scale{stage}{block}_branch{br}.1"] + ([f"bn{stage}{block}_branch{br}.2"] if factors else [])
    names += [f"{layer}.{b}" for layer in _HEADS for b in "01"]
    return {convert_key(n): n for n in names}  # type: ignore[misc]


def _unscale(weight: Tensor, bias: Tensor, scale: Tensor, mean: Tensor) -> tuple[Tensor, Tensor]:
    """Invert ``weight * s`` and ``bias * s + m`` per output channel (in float64)."""
    s = scale.to(weight.device)
    w = (weight.double() / s.view(-1, *([1] * (weight.dim() - 1)))).to(weight.dtype)
    return w, ((bias.double() - mean.to(bias.device)) / s).to(bias.dtype)


def convert(state_dict: Mapping[str, Tensor], *, bbox_scaled: bool = True) -> dict[str, Tensor]:
    """Map a CoupleNet ``.caffemodel`` state dict (``load_caffemodel``'s ``<layer>.<blob>`` keys) to zoo's
    ``couplenet`` keys: BN statistics divided by their factor, ``conv1`` flipped to RGB and (``bbox_scaled``)
    the snapshot's box std scaling undone (see the module docstring)."""
    out = remap_keys(state_dict, convert_key, layout=_LAYOUT, required=reference_names(factors=True))
    for key in [k for k in out if k.endswith(".factor")]:
        factor = out.pop(key).reshape(-1)
        if factor.numel() != 1:
            raise StateDictMismatchError(f"{_LAYOUT}: the BatchNorm factor blob of {key[:-len('.factor')]} has "
                                         f"{factor.numel()} values, expected 1")
        inverse = 0.0 if float(factor) == 0 else 1.0 / float(factor)
        for stat in ("running_mean", "running_var"):
            name = key.replace(".factor", f".{stat}")
            out[name] = out[name] * inverse
    for key, value in out.items():
        if value.dim() != 1 and (not key.endswith(".weight") or _NORM_WEIGHT.search(key)):
            out[key] = value.reshape(-1)  # legacy (1, 1, 1, C) vector blobs
    out["backbone.body.conv1.weight"] = out["backbone.body.conv1.weight"].flip(1)  # BGR -> RGB input
    if bbox_scaled:
        heads = "roi_heads."
        local_w, local_b = out[heads + "rfcn_bbox.weight"], out[heads + "rfcn_bbox.bias"]
        global_w, global_b = out[heads + "global_bbox_pred.weight"], out[heads + "global_bbox_pred.bias"]
        k2 = local_b.shape[0] // global_b.shape[0] if global_b.shape[0] else 0
        if global_b.shape[0] % 4 or k2 * global_b.shape[0] != local_b.shape[0]:
            raise StateDictMismatchError(f"{_LAYOUT}: local_bbox has {local_b.shape[0]} and global_bbox_pred "
                                         f"{global_b.shape[0]} outputs; expected k*k*4n and 4n")
        group = round(k2 ** 0.5)
        # local_bbox: np.repeat(stds, k*k) on weight and bias (the means are not added there)
        out[heads + "rfcn_bbox.weight"], out[heads + "rfcn_bbox.bias"] = _unscale(
            local_w, local_b, bbox_scale(local_b.shape[0], group_size=group),
            torch.zeros(local_b.shape[0], dtype=torch.float64))
        # global_bbox_pred: stds and means, one per output
        out[heads + "global_bbox_pred.weight"], out[heads + "global_bbox_pred.bias"] = _unscale(
            global_w, global_b, bbox_scale(global_b.shape[0], group_size=1),
            bbox_scale(global_b.shape[0], BBOX_MEANS, group_size=1))
    return out

