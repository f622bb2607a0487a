"""mmdetection 3.x CondInst -> zoo ``condinst`` (``style="pytorch"``).

Checkpoint: ``configs/condinst/condinst_r50_fpn_ms-poly-90k_coco_instance`` (ResNet-50 style='pytorch',
FPN start_level=1 with ``add_extra_convs='on_output'`` and ``relu_before_extra_convs``,
``CondInstBboxHead`` = FCOSHead + controller, ``CondInstMaskHead`` with ``MaskFeatModule``), files
``{"meta": ..., "state_dict": {...}}``.

Key mapping (mmdet -> zoo):

    backbone.{conv1,bn1}.*, backbone.layerL.i.*         -> backbone.body.{same}.* (BN num_batches_tracked dropped)
    neck.lateral_convs.i.conv.*                         -> backbone.fpn.inner_blocks.i.0.*     (i = 0..2: C3..C5)
    neck.fpn_convs.i.conv.*  (i = 0..2)                 -> backbone.fpn.layer_blocks.i.0.*
    neck.fpn_convs.{3,4}.conv.*                         -> backbone.fpn.extra_blocks.{p6,p7}.*
    bbox_head.{cls,reg}_convs.i.conv.* / .gn.*          -> head.{cls,bbox}_tower.{3i}.* / .{3i+1}.*
    bbox_head.conv_cls / conv_reg / conv_centerness / controller -> head.cls_logits / bbox_pred / ctrness / controller
    bbox_head.scales.i.scale  (shape ())                -> head.scales.i.scale  (shape (1,))
    mask_head.mask_feature_head.convs_all_levels.i.conv{i}.{conv,bn}.* -> mask_branch.refine.i.{0,1}.*
    mask_head.mask_feature_head.conv_branch.j.{conv,bn}.*              -> mask_branch.tower.j.{0,1}.*
    mask_head.mask_feature_head.conv_pred.*             -> mask_branch.tower.{number of conv_branch convs}.*
    (added) mask_head.sizes_of_interest = (64, 128, 256, 512, 1024): mmdet's size_of_interest 8 x the
    instance's FPN stride, which is AdelaiDet's rule.

Both use P6 from P5 and P7 from ReLU(P6) (torchvision's ``LastLevelP6P7(256, 256)``), FCOS distances
ReLU(scale * x) * stride, the same dynamic-parameter layout (weights then biases) and relative coordinates
(instance location - pixel location, pixel centres at i * s + s // 2).

Build the model with ``condinst(style="pytorch", thresh_with_ctr=False)``: stride on the 3x3 conv and
ImageNet mean/std on RGB (mmdet's data preprocessor with ``bgr_to_rgb=True``); candidates thresholded on
the class probability alone. Remaining inference differences (zoo follows AdelaiDet): mmdet ranks the
per-level top 1000 by class probability (zoo by class x centre-ness), clips boxes before NMS and reports
class x centre-ness scores without the square root (a monotonic change: the same ranking and AP, other
values for a score threshold). Classes: mmdet's 80 contiguous COCO classes are zoo's.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

from zoo.converters import apply_rules, checkpoint_tensors, remap_keys, rules
from zoo.errors import StateDictMismatchError

__all__ = ["SIZES_OF_INTEREST", "convert", "convert_key"]

#: mmdet's ``size_of_interest`` (8) times the FPN strides 8..128.
SIZES_OF_INTEREST = (64, 128, 256, 512, 1024)
_MF = r"mask_head\.mask_feature_head"
_NORM = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_RULES = rules(
    (r"^backbone\.((conv1|bn1)\.\w+|layer[1-4]\.\d+\.(conv[1-3]|bn[1-3]|downsample\.[01])\.\w+)$",
     r"backbone.body.\1"),
    (r"^neck\.lateral_convs\.([0-2])\.conv\.(weight|bias)$", r"backbone.fpn.inner_blocks.\1.0.\2"),
    (r"^neck\.fpn_convs\.([0-2])\.conv\.(weight|bias)$", r"backbone.fpn.layer_blocks.\1.0.\2"),
    (r"^neck\.fpn_convs\.3\.conv\.(weight|bias)$", r"backbone.fpn.extra_blocks.p6.\1"),
    (r"^neck\.fpn_convs\.4\.conv\.(weight|bias)$", r"backbone.fpn.extra_blocks.p7.\1"),
    (r"^bbox_head\.cls_convs\.(\d+)\.conv\.(weight|bias)$", r"head.cls_tower.<3*\1>.\2"),
    (r"^bbox_head\.cls_convs\.(\d+)\.gn\.(weight|bias)$", r"head.cls_tower.<3*\1+1>.\2"),
    (r"^bbox_head\.reg_convs\.(\d+)\.conv\.(weight|bias)$", r"head.bbox_tower.<3*\1>.\2"),
    (r"^bbox_head\.reg_convs\.(\d+)\.gn\.(weight|bias)$", r"head.bbox_tower.<3*\1+1>.\2"),
    (r"^bbox_head\.conv_cls\.(weight|bias)$", r"head.cls_logits.\1"),
    (r"^bbox_head\.conv_reg\.(weight|bias)$", r"head.bbox_pred.\1"),
    (r"^bbox_head\.conv_centerness\.(weight|bias)$", r"head.ctrness.\1"),
    (r"^bbox_head\.controller\.(weight|bias)$", r"head.controller.\1"),
    (r"^bbox_head\.scales\.(\d+)\.scale$", r"head.scales.\1.scale"),
    (rf"^{_MF}\.convs_all_levels\.(\d+)\.conv\d+\.conv\.weight$", r"mask_branch.refine.\1.0.weight"),
    (rf"^{_MF}\.convs_all_levels\.(\d+)\.conv\d+\.bn\.{_NORM}$", r"mask_branch.refine.\1.1.\2"),
    (rf"^{_MF}\.conv_branch\.(\d+)\.conv\.weight$", r"mask_branch.tower.\1.0.weight"),
    (rf"^{_MF}\.conv_branch\.(\d+)\.bn\.{_NORM}$", r"mask_branch.tower.\1.1.\2"),
    (rf"^{_MF}\.conv_pred\.(weight|bias)$", r"mask_branch.tower.<pred>.\1"),
)
_INDEX = re.compile(r"<3\*(\d+)(\+1)?>")


def convert_key(key: str, num_branch_convs: int = 4) -> str | None:
    """zoo key for one mmdet key (``module.`` stripped), or None if it is not part of the layout.
    ``num_branch_convs``: the number of ``conv_branch`` convs (``conv_pred`` follows them)."""
    new = apply_rules(key, _RULES)
    if new is None:
        return None
    new = _INDEX.sub(lambda m: str(3 * int(m.group(1)) + (1 if m.group(2) else 0)), new)
    return new.replace("<pred>", str(num_branch_convs))


def convert(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Map an mmdet 3.x CondInst R-50-FPN state dict (or a ``{"meta", "state_dict"}`` checkpoint) to zoo's
    ``condinst`` keys (build with ``style="pytorch", thresh_with_ctr=False``)."""
    state = checkpoint_tensors(state_dict)
    branch = {int(m.group(1)) for k in state if (m := re.match(rf"^{_MF}\.conv_branch\.(\d+)\.", k))}
    out = remap_keys(
        state, lambda k: convert_key(k, len(branch)), layout="mmdet CondInst (ResNet-FPN)",
        drop=r"^backbone\..*num_batches_tracked$",
        required={"backbone.body.conv1.weight": "backbone.conv1.weight",
                  "head.cls_logits.weight": "bbox_head.conv_cls.weight",
                  "head.controller.weight": "bbox_head.controller.weight",
                  f"mask_branch.tower.{len(branch)}.weight": "mask_head.mask_feature_head.conv_pred.weight"},
    )
    for key in [k for k in out if k.startswith("head.scales.")]:
        if out[key].numel() != 1:
            raise StateDictMismatchError(f"{key}: an FCOS Scale holds one number, got shape {tuple(out[key].shape)}")
        out[key] = out[key].reshape(1)
    device = out["head.controller.weight"].device
    out["mask_head.sizes_of_interest"] = torch.tensor(SIZES_OF_INTEREST, dtype=torch.int64, device=device)
    return out
