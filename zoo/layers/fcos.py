"""FCOS training: target assignment and the classification, box and centre-ness losses (public names).

Paper: Tian, Shen, Chen, He, "FCOS: Fully Convolutional One-Stage Object Detection", ICCV 2019,
https://arxiv.org/abs/1904.01355; the rules and defaults are AdelaiDet's "improved FCOS"
(``adet/modeling/fcos/fcos_outputs.py``, ``adet/config/defaults.py``, at
aim-uofa/AdelaiDet@36721221eb572256206e60df6e9095ed00b2e08c), as CondInst (:mod:`zoo.models.condinst`)
trains them. Any FCOS-style detector can reuse them: its head predicts, per location of P3-P7, class
logits, (l, t, r, b) distances in units of the level stride and a centre-ness logit.

- FCOS targets (:func:`fcos_targets`, per image over the locations of P3-P7): a location may take a
  ground truth whose *centre region* contains it strictly (``CENTER_SAMPLE=True``, ``POS_RADIUS=1.5``:
  the box around the centre of mass of the instance's mask, pixel-index coordinates as
  ``get_sample_region`` with ``gt_bitmasks_full``, +-1.5 level strides, clipped to the box) and whose
  largest distance max(l, t, r, b) lies in the level's range [-1, 64], [64, 128], [128, 256],
  [256, 512], [512, 1e8] (``SIZES_OF_INTEREST``, both ends inclusive); of several, the smallest box area
  wins (the first in target order among equal areas); no candidate = background (class
  ``num_classes``). Regression targets (l, t, r, b) are divided by the level stride (the head predicts
  distances in stride units; AdelaiDet's ``_get_ground_truth`` always divides); centre-ness target
  sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)).
- ``loss_fcos_cls``: sigmoid focal loss (``torchvision.ops.sigmoid_focal_loss``, alpha 0.25, gamma 2,
  the formula of fvcore's ``sigmoid_focal_loss_jit``) summed over all locations and classes, divided by
  max(number of positives, 1) (``LOSS_NORMALIZER_CLS="fg"``).
- ``loss_fcos_loc``: AdelaiDet's ``IOULoss("giou")`` on the (l, t, r, b) of the positives in stride units
  (:func:`fcos_ious`: IoU = (intersection + 1) / (union + 1), GIoU = IoU - (enclosing - union) /
  enclosing), sum of (1 - GIoU) x centre-ness target divided by the sum of the centre-ness targets
  (at least 1e-6). ``torchvision.ops.generalized_box_iou_loss`` is the same GIoU without the +1
  smoothing, which changes it for boxes of a few strides, so the formula is written here.
- ``loss_fcos_ctr``: binary cross-entropy with logits of the positives' centre-ness, summed, divided by
  max(number of positives, 1).
- Normalisers across processes: AdelaiDet divides by the *mean over GPUs* of the positive count and of
  the centre-ness sum (``reduce_mean``), so that DDP's gradient average gives global sum / global count.
  Under an initialised ``torch.distributed`` group the same all-reduce runs here; in one process the
  normaliser is that process's own count / sum.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss

__all__ = ["INF", "centerness_targets", "dice_loss", "fcos_ious", "fcos_losses", "fcos_targets"]

INF = 1e8  # AdelaiDet's INF: the open upper end of the last size range, and "no candidate" in the assignment


def fcos_targets(locations: Sequence[Tensor], strides: Sequence[int], boxes: Tensor, classes: Tensor, *,
                 num_classes: int, sizes_of_interest: Sequence[float] = (64, 128, 256, 512),
                 masks: Tensor | None = None, center_sample: bool = True,
                 radius: float = 1.5) -> tuple[Tensor, Tensor, Tensor]:
    """FCOS targets of one image (AdelaiDet ``FCOSOutputs.compute_targets_for_locations``; the rules are
    in the module docstring).

    ``locations``: per level (P_l, 2) input-pixel (x, y) (:func:`zoo.ops.dynamic_mask_head.compute_locations`);
    ``boxes`` (G, 4) x1y1x2y2; ``classes`` (G,) in [0, num_classes); ``masks`` (G, H, W) of the padded input:
    the centre region is around their centre of mass (else around the box centre). Returns, over the P = sum P_l
    locations level by level: class (P,) int64 (``num_classes`` = background), (l, t, r, b) (P, 4)
    divided by the location's stride (0 on background), index of the assigned ground truth (P,) int64
    (-1 = background).
    """
    loc = torch.cat(list(locations))
    dtype = torch.promote_types(loc.dtype, torch.float32)
    loc = loc.to(dtype)
    counts = [len(x) for x in locations]
    stride = torch.repeat_interleave(torch.tensor([float(s) for s in strides], dtype=dtype, device=loc.device),
                                     torch.tensor(counts, device=loc.device))
    p, g = loc.shape[0], boxes.shape[0]
    if g == 0:
        return (torch.full((p,), num_classes, dtype=torch.int64, device=loc.device), loc.new_zeros(p, 4),
                torch.full((p,), -1, dtype=torch.int64, device=loc.device))
    edges = [-1.0, *(float(s) for s in sizes_of_interest), INF]
    bounds = torch.repeat_interleave(torch.tensor(list(zip(edges[:-1], edges[1:])), dtype=dtype, device=loc.device),
                                     torch.tensor(counts, device=loc.device), dim=0)            # (P, 2)
    boxes = boxes.to(dtype)
    xs, ys = loc[:, 0:1], loc[:, 1:2]
    ltrb = torch.stack([xs - boxes[:, 0], ys - boxes[:, 1], boxes[:, 2] - xs, boxes[:, 3] - ys], dim=2)  # (P, G, 4)
    if center_sample:
        if masks is not None:   # column and row sums, no float copy of the (G, H, W) masks
            cols, rows = masks.sum(1).to(dtype), masks.sum(2).to(dtype)
            mass = cols.sum(1).clamp(min=1e-6)
            cx = (cols * torch.arange(cols.shape[1], dtype=dtype, device=cols.device)).sum(1) / mass
            cy = (rows * torch.arange(rows.shape[1], dtype=dtype, device=rows.device)).sum(1) / mass
        else:
            cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        reach = stride[:, None] * radius                                                         # (P, 1)
        region = torch.stack([torch.maximum(cx - reach, boxes[:, 0]), torch.maximum(cy - reach, boxes[:, 1]),
                              torch.minimum(cx + reach, boxes[:, 2]), torch.minimum(cy + reach, boxes[:, 3])], 2)
        inside = torch.stack([xs - region[..., 0], ys - region[..., 1], region[..., 2] - xs,
                              region[..., 3] - ys], 2).amin(2) > 0
    else:
        inside = ltrb.amin(2) > 0
    reach_max = ltrb.amax(2)
    in_range = (reach_max >= bounds[:, 0:1]) & (reach_max <= bounds[:, 1:2])
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    area = torch.where(inside & in_range, area.expand(p, g), torch.full_like(reach_max, INF))
    best_area, gt = area.min(1)                                       # ties: the first ground truth
    background = best_area == INF
    labels = torch.where(background, torch.full_like(gt, num_classes), classes.to(torch.int64)[gt])
    reg = torch.where(background[:, None], 0.0, ltrb[torch.arange(p, device=loc.device), gt] / stride[:, None])
    return labels, reg, torch.where(background, torch.full_like(gt, -1), gt)


def centerness_targets(reg: Tensor) -> Tensor:
    """sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)) of (N, 4) (l, t, r, b) -> (N,)."""
    lr, tb = reg[:, [0, 2]], reg[:, [1, 3]]
    return torch.sqrt(lr.amin(1) / lr.amax(1) * (tb.amin(1) / tb.amax(1)))


def fcos_ious(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """AdelaiDet's ``compute_ious`` on (N, 4) (l, t, r, b) distances from one location: IoU with +1 on
    intersection and union, and GIoU = IoU - (enclosing - union) / enclosing. Returns (iou, giou), (N,)."""
    area_p = (pred[:, 0] + pred[:, 2]) * (pred[:, 1] + pred[:, 3])
    area_t = (target[:, 0] + target[:, 2]) * (target[:, 1] + target[:, 3])
    low, high = torch.minimum(pred, target), torch.maximum(pred, target)
    inter = (low[:, 0] + low[:, 2]) * (low[:, 1] + low[:, 3])
    enclosing = (high[:, 0] + high[:, 2]) * (high[:, 1] + high[:, 3])
    union = area_p + area_t - inter
    iou = (inter + 1.0) / (union + 1.0)
    return iou, iou - (enclosing - union) / enclosing


def dice_loss(scores: Tensor, targets: Tensor, eps: float = 1e-5) -> Tensor:
    """Per-instance dice loss 1 - 2 sum(p g) / (sum(p^2) + sum(g^2) + eps) of (N, ...) probabilities and
    targets -> (N,) (AdelaiDet's ``dice_coefficient``)."""
    p, g = scores.flatten(1), targets.to(scores.dtype).flatten(1)
    return 1.0 - 2 * (p * g).sum(1) / ((p * p).sum(1) + (g * g).sum(1) + eps)


def _mean_over_processes(value: Tensor) -> float:
    """AdelaiDet's ``reduce_mean(value).item()``: the mean over the processes of an initialised
    ``torch.distributed`` group, else ``value`` itself."""
    value = value.detach().double()
    if dist.is_available() and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value)
        value = value / dist.get_world_size()
    return float(value)


def fcos_losses(logits: Tensor, reg_pred: Tensor, ctr_pred: Tensor, labels: Tensor, reg_targets: Tensor, *,
                alpha: float = 0.25, gamma: float = 2.0) -> dict[str, Tensor]:
    """AdelaiDet's ``FCOSOutputs.fcos_losses`` (``BOX_QUALITY="ctrness"``, ``LOC_LOSS_TYPE="giou"``,
    ``LOSS_NORMALIZER_CLS="fg"``) over M locations: ``logits`` (M, C), ``reg_pred`` (M, 4) and
    ``reg_targets`` (M, 4) in stride units, ``ctr_pred`` (M,) logits, ``labels`` (M,) (C = background).
    Returns ``loss_fcos_cls``, ``loss_fcos_loc``, ``loss_fcos_ctr`` (see the module docstring)."""
    num_classes = logits.shape[1]
    pos = labels != num_classes
    num_pos = max(_mean_over_processes(pos.sum()), 1.0)
    target = F.one_hot(torch.where(pos, labels, 0), num_classes).to(logits.dtype) * pos[:, None].to(logits.dtype)
    cls = sigmoid_focal_loss(logits, target, alpha=alpha, gamma=gamma, reduction="sum") / num_pos
    pred, tgt = reg_pred[pos], reg_targets[pos].to(reg_pred.dtype)
    ctr_t = centerness_targets(tgt)
    _, giou = fcos_ious(pred, tgt)
    loc = ((1 - giou) * ctr_t).sum() / max(_mean_over_processes(ctr_t.sum()), 1e-6)
    ctr = F.binary_cross_entropy_with_logits(ctr_pred[pos], ctr_t, reduction="sum") / num_pos
    return {"loss_fcos_cls": cls, "loss_fcos_loc": loc, "loss_fcos_ctr": ctr}
