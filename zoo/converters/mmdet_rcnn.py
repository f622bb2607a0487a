"""mmdetection Faster / Mask R-CNN (ResNet-FPN, DCN / DCNv2 / deformable RoI pooling) -> zoo ``faster_rcnn`` /
``mask_rcnn``.

Checkpoints: mmdet 2.x/3.x ``configs/dcn`` and ``configs/dcnv2`` COCO models
(``faster_rcnn_r50_fpn_{dconv,mdconv}_c3-c5_1x_coco``, ``faster_rcnn_r50_fpn_{dpool,mdpool}_1x_coco``,
``mask_rcnn_r50_fpn_{dconv,mdconv}_c3-c5_1x_coco``), files ``{"meta": ..., "state_dict": {...}}``.

Key mapping (mmdet -> zoo, which is torchvision's detection layout):

    backbone.{conv1,bn1}.*, backbone.layerL.i.*         -> backbone.body.{same}.*   (conv2.conv_offset kept;
                                                           BN ``num_batches_tracked`` dropped: frozen BN)
    neck.lateral_convs.i.conv.*                         -> backbone.fpn.inner_blocks.i.0.*
    neck.fpn_convs.i.conv.*                             -> backbone.fpn.layer_blocks.i.0.*
    rpn_head.rpn_conv.* / rpn_cls.* / rpn_reg.*         -> rpn.head.conv.0.0.* / cls_logits.* / bbox_pred.*
    roi_head.bbox_roi_extractor.roi_layers.i.{offset_fc,mask_fc}.*  -> roi_heads.box_roi_pool.roi_layers.i.*
    roi_head.bbox_head.shared_fcs.{0,1}.*               -> roi_heads.box_head.{fc6,fc7}.*
    roi_head.bbox_head.fc_cls.* / fc_reg.*              -> roi_heads.box_predictor.cls_score.* / bbox_pred.*
    roi_head.mask_head.convs.i.conv.*                   -> roi_heads.mask_head.i.0.*
    roi_head.mask_head.upsample.* / conv_logits.*       -> roi_heads.mask_predictor.conv5_mask.* / mask_fcn_logits.*

Conventions that differ and how they are converted:
- Classes: mmdet has 80 contiguous COCO classes with the background LAST in ``fc_cls`` (81 rows) and
  class-specific ``fc_reg`` without a background (320 rows); torchvision/zoo use 91 rows indexed by the
  COCO category id with background 0. Row ``COCO_IDS[k]`` takes mmdet class k, row 0 takes mmdet's
  background row. The 10 ids unused by COCO 2017 get zero weights and a classifier bias of -1e4, so the
  91-way softmax equals mmdet's 81-way softmax (their probability is exp(-1e4) = 0); their box and mask
  rows are zero. ``conv_logits`` (80 rows) is placed the same way.
- RPN: both use sigmoid objectness with one channel per anchor, anchor-major regression channels,
  anchors 32..512 on P2..P6 with ratios (0.5, 1, 2) in the same order, and deltas (dx, dy, dw, dh) with
  stds 1 (torchvision RPN box coder weights 1) -> tensors pass unchanged. torchvision rounds its base
  anchors to integers, mmdet 2.x does not (a sub-pixel difference in proposals).
- Box deltas: mmdet's target stds (0.1, 0.1, 0.2, 0.2) are torchvision's box coder weights
  (10, 10, 5, 5) -> unchanged.
Checkpoints of mmdet 1.x (``bbox_head.*`` at the top level) are not handled. DataParallel ``module.``
prefixes are stripped; unknown keys raise :class:`~zoo.errors.StateDictMismatchError`.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from zoo.converters import apply_rules, remap_keys, rules
from zoo.data.coco import COCO_IDS, COCO_NUM_IDS
from zoo.errors import StateDictMismatchError

__all__ = ["COCO_IDS", "convert", "convert_key"]

NUM_CLASSES = COCO_NUM_IDS
_UNUSED_BIAS = -1e4

_RULES = rules(
    (r"^backbone\.((conv1|bn1)\.\w+|layer[1-4]\.\d+\.(conv[1-3](\.conv_offset)?|bn[1-3]|downsample\.[01])\.\w+)$",
     r"backbone.body.\1"),
    (r"^neck\.lateral_convs\.(\d+)\.conv\.(weight|bias)$", r"backbone.fpn.inner_blocks.\1.0.\2"),
    (r"^neck\.fpn_convs\.(\d+)\.conv\.(weight|bias)$", r"backbone.fpn.layer_blocks.\1.0.\2"),
    (r"^rpn_head\.rpn_conv\.(weight|bias)$", r"rpn.head.conv.0.0.\1"),
    (r"^rpn_head\.rpn_cls\.(weight|bias)$", r"rpn.head.cls_logits.\1"),
    (r"^rpn_head\.rpn_reg\.(weight|bias)$", r"rpn.head.bbox_pred.\1"),
    (r"^roi_head\.bbox_roi_extractor\.roi_layers\.(\d+)\.((offset_fc\.[024]|mask_fc\.[02])\.(weight|bias))$",
     r"roi_heads.box_roi_pool.roi_layers.\1.\2"),
    (r"^roi_head\.bbox_head\.shared_fcs\.0\.(weight|bias)$", r"roi_heads.box_head.fc6.\1"),
    (r"^roi_head\.bbox_head\.shared_fcs\.1\.(weight|bias)$", r"roi_heads.box_head.fc7.\1"),
    (r"^roi_head\.bbox_head\.fc_cls\.(weight|bias)$", r"roi_heads.box_predictor.cls_score.\1"),
    (r"^roi_head\.bbox_head\.fc_reg\.(weight|bias)$", r"roi_heads.box_predictor.bbox_pred.\1"),
    (r"^roi_head\.mask_head\.convs\.(\d+)\.conv\.(weight|bias)$", r"roi_heads.mask_head.\1.0.\2"),
    (r"^roi_head\.mask_head\.upsample\.(weight|bias)$", r"roi_heads.mask_predictor.conv5_mask.\1"),
    (r"^roi_head\.mask_head\.conv_logits\.(weight|bias)$", r"roi_heads.mask_predictor.mask_fcn_logits.\1"),
)


def convert_key(key: str) -> str | None:
    """zoo key for one mmdet key (``module.`` stripped), or None if it is not part of the layout."""
    return apply_rules(key, _RULES)


def _scatter_rows(value: Tensor, rows_per_class: int, background: Tensor | None, fill: float) -> Tensor:
    """(80 * r, ...) mmdet rows -> (91 * r, ...) rows at COCO ids; row block 0 = ``background``."""
    if value.shape[0] != len(COCO_IDS) * rows_per_class:
        raise StateDictMismatchError(
            f"expected {len(COCO_IDS)} COCO classes x {rows_per_class} rows in an mmdet head, got {value.shape[0]} "
            "rows (only 80-class COCO models can be mapped to COCO category ids)")
    out = value.new_full((NUM_CLASSES * rows_per_class, *value.shape[1:]), fill)
    ids = torch.tensor(COCO_IDS, device=value.device)
    index = (ids.view(-1, 1) * rows_per_class + torch.arange(rows_per_class, device=value.device)).flatten()
    out[index] = value
    if background is not None:
        out[:rows_per_class] = background
    return out


def convert(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Map an mmdet Faster/Mask R-CNN R50-FPN (dconv / mdconv / dpool / mdpool) state dict (or a
    ``{"meta", "state_dict"}`` checkpoint) to zoo's ``faster_rcnn`` / ``mask_rcnn`` keys (91 classes)."""
    out = remap_keys(
        state_dict, _RULES, layout="mmdet Faster/Mask R-CNN (ResNet-FPN)", drop=r".*num_batches_tracked$",
        required={"backbone.body.conv1.weight": "backbone.conv1.weight",
                  "rpn.head.cls_logits.weight": "rpn_head.rpn_cls.weight",
                  "roi_heads.box_predictor.cls_score.weight": "roi_head.bbox_head.fc_cls.weight"},
    )
    n = len(COCO_IDS)
    for suffix in ("weight", "bias"):
        key = f"roi_heads.box_predictor.cls_score.{suffix}"
        cls = out[key]
        if cls.shape[0] != n + 1:
            raise StateDictMismatchError(f"roi_head.bbox_head.fc_cls.{suffix} has {cls.shape[0]} rows; expected "
                                         f"{n + 1} (80 COCO classes + background last)")
        out[key] = _scatter_rows(cls[:n], 1, cls[n:], _UNUSED_BIAS if suffix == "bias" else 0.0)
        key = f"roi_heads.box_predictor.bbox_pred.{suffix}"
        if key in out:
            out[key] = _scatter_rows(out[key], 4, None, 0.0)
        key = f"roi_heads.mask_predictor.mask_fcn_logits.{suffix}"
        if key in out:
            out[key] = _scatter_rows(out[key], 1, None, 0.0)
    return out
