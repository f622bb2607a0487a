"""AdelaiDet CondInst (detectron2 layout) -> zoo ``condinst`` (``style="caffe"``).

Checkpoints: AdelaiDet ``configs/CondInst`` COCO models (``CondInst_MS_R_50_1x.pth``, ``_MS_R_50_3x``,
``_MS_R_101_3x`` and the ``_sem`` variants, hosted on the HF Hub under ``tianzhi/AdelaiDet-CondInst``),
files ``{"model": {...}, ...}`` (detectron2 checkpointer). BiFPN models are not handled.

Key mapping (AdelaiDet -> zoo):

    backbone.bottom_up.stem.conv1.weight                -> backbone.body.conv1.weight (input channels reversed)
    backbone.bottom_up.stem.conv1.norm.*                -> backbone.body.bn1.*
    backbone.bottom_up.res{s}.{i}.conv{j}.weight        -> backbone.body.layer{s-1}.{i}.conv{j}.weight
    backbone.bottom_up.res{s}.{i}.conv{j}.norm.*        -> backbone.body.layer{s-1}.{i}.bn{j}.*
    backbone.bottom_up.res{s}.{i}.shortcut.weight/.norm.* -> backbone.body.layer{s-1}.{i}.downsample.{0,1}.*
    backbone.fpn_lateral{3,4,5}.* / fpn_output{3,4,5}.* -> backbone.fpn.inner_blocks.{0,1,2}.0.* / layer_blocks.{0,1,2}.0.*
    backbone.top_block.{p6,p7}.*                        -> backbone.fpn.extra_blocks.{p6,p7}.*
    proposal_generator.fcos_head.{cls_tower,bbox_tower,cls_logits,bbox_pred,ctrness,scales}.* -> head.{same}.*
    controller.*                                        -> head.controller.*
    mask_branch.{refine,tower}.*                        -> mask_branch.{same}.*
    mask_head.sizes_of_interest                         -> mask_head.sizes_of_interest

Conventions that differ and how they are converted:
- Colour order: detectron2 feeds BGR pixels in 0..255 minus ``PIXEL_MEAN`` (103.53, 116.28, 123.675),
  ``PIXEL_STD`` 1. zoo takes RGB; ``style="caffe"`` normalises RGB the same way (mean/255, std 1/255), and
  the stem conv's input channels are reversed here, so the network computes the same numbers.
- Dropped: FrozenBN ``num_batches_tracked`` (if any) in the backbone, the training-only
  ``mask_head._iter`` counter, and the ``_sem`` models' auxiliary semantic head
  (``mask_branch.seg_head.*``, ``mask_branch.logits.*``), which inference does not use.
- Classes: AdelaiDet's 80 contiguous COCO classes are zoo's; the model maps them to COCO category ids
  at its output. ``MS_R_101`` checkpoints need ``depth=101``; all need ``style="caffe"`` (the stride of a
  bottleneck on its 1x1 conv, detectron2's ``STRIDE_IN_1X1=True``).
A ``{"model": ...}`` or ``{"state_dict": ...}`` wrapper and DataParallel ``module.`` prefixes are
stripped; unknown keys raise :class:`~zoo.errors.StateDictMismatchError`.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

from zoo.converters import apply_rules, remap_keys, rules

__all__ = ["convert", "convert_key"]

_NORM = r"(weight|bias|running_mean|running_var)"
_RULES = rules(
    (r"^backbone\.bottom_up\.stem\.conv1\.weight$", r"backbone.body.conv1.weight"),
    (rf"^backbone\.bottom_up\.stem\.conv1\.norm\.{_NORM}$", r"backbone.body.bn1.\1"),
    (r"^backbone\.bottom_up\.res([2-5])\.(\d+)\.conv([1-3])\.weight$", r"backbone.body.layer<\1>.\2.conv\3.weight"),
    (rf"^backbone\.bottom_up\.res([2-5])\.(\d+)\.conv([1-3])\.norm\.{_NORM}$", r"backbone.body.layer<\1>.\2.bn\3.\4"),
    (r"^backbone\.bottom_up\.res([2-5])\.(\d+)\.shortcut\.weight$", r"backbone.body.layer<\1>.\2.downsample.0.weight"),
    (rf"^backbone\.bottom_up\.res([2-5])\.(\d+)\.shortcut\.norm\.{_NORM}$",
     r"backbone.body.layer<\1>.\2.downsample.1.\3"),
    (r"^backbone\.fpn_lateral([3-5])\.(weight|bias)$", r"backbone.fpn.inner_blocks.<<\1>>.0.\2"),
    (r"^backbone\.fpn_output([3-5])\.(weight|bias)$", r"backbone.fpn.layer_blocks.<<\1>>.0.\2"),
    (r"^backbone\.top_block\.(p6|p7)\.(weight|bias)$", r"backbone.fpn.extra_blocks.\1.\2"),
    (r"^proposal_generator\.fcos_head\.((cls_tower|bbox_tower)\.\d+\.(weight|bias)"
     r"|(cls_logits|bbox_pred|ctrness)\.(weight|bias)|scales\.\d+\.scale)$", r"head.\1"),
    (r"^controller\.(weight|bias)$", r"head.controller.\1"),
    (r"^mask_branch\.((refine|tower)\.\d+\.(\d+\.)?(weight|bias|running_mean|running_var|num_batches_tracked))$",
     r"mask_branch.\1"),
    (r"^mask_head\.sizes_of_interest$", r"mask_head.sizes_of_interest"),
)
# not part of the inference network: training counters and the _sem models' auxiliary semantic head
_DROP = re.compile(r"^(mask_head\._iter|mask_branch\.(seg_head|logits)\..*|backbone\.bottom_up\..*num_batches_tracked)$")


def convert_key(key: str) -> str | None:
    """zoo key for one AdelaiDet key (``module.`` stripped), or None if it is not part of the layout."""
    new = apply_rules(key, _RULES)
    if new is None:
        return None
    new = re.sub(r"<<(\d)>>", lambda m: str(int(m.group(1)) - 3), new)  # fpn level 3..5 -> 0..2
    return re.sub(r"<(\d)>", lambda m: str(int(m.group(1)) - 1), new)  # res2..5 -> layer1..4


def convert(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Map an AdelaiDet CondInst R-50/R-101 state dict (or a ``{"model": ...}`` checkpoint) to zoo's
    ``condinst`` keys (``style="caffe"``, RGB input)."""
    out = remap_keys(
        state_dict, convert_key, layout="AdelaiDet CondInst (ResNet-FPN)", drop=_DROP,
        required={"backbone.body.conv1.weight": "backbone.bottom_up.stem.conv1.weight",
                  "head.cls_logits.weight": "proposal_generator.fcos_head.cls_logits.weight",
                  "head.controller.weight": "controller.weight"},
    )
    out["backbone.body.conv1.weight"] = out["backbone.body.conv1.weight"].flip(1)  # BGR -> RGB input
    return out
