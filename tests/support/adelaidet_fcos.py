"""Test oracle: AdelaiDet's FCOS and CondInst training formulas restated one location, one class and one
instance at a time on Python floats, independent of zoo's vectorised code (zoo.models.condinst).

Source (aim-uofa/AdelaiDet@36721221eb572256206e60df6e9095ed00b2e08c):
- adet/modeling/fcos/fcos_outputs.py: ``sizes_of_interest`` ranges (``FCOSOutputs.__init__``),
  ``get_sample_region`` (centre region: centre of mass of ``gt_bitmasks_full`` in pixel-index coordinates,
  else the box centre; +-stride x radius, clipped to the box; strictly inside), ``compute_targets_for_locations``
  (max(l, t, r, b) within the level's inclusive range, smallest area wins, the first among equals),
  ``_get_ground_truth`` (targets / stride), ``compute_ctrness_targets``, ``fcos_losses`` (focal sum / max(#pos, 1),
  IOULoss weighted by centre-ness targets / their sum, centre-ness BCE sum / max(#pos, 1));
- adet/utils/comm.py ``compute_ious`` and adet/layers/iou_loss.py ``IOULoss("giou")``;
- fvcore/nn/focal_loss.py ``sigmoid_focal_loss`` (AdelaiDet's ``sigmoid_focal_loss_jit``);
- adet/modeling/condinst/dynamic_mask_head.py ``dice_coefficient`` (eps 1e-5), mean over instances.
"""
from __future__ import annotations

import math

INF = 100000000


def size_ranges(sizes_of_interest):
    """[(-1, s0), (s0, s1), ..., (s_last, INF)]."""
    edges = [-1, *sizes_of_interest, INF]
    return list(zip(edges[:-1], edges[1:]))


def mask_centre(mask):
    """Centre of mass (x, y) of a 0/1 mask (H, W) in pixel-index coordinates; (0, 0) when empty."""
    total = sx = sy = 0.0
    for y, x in mask.nonzero().tolist():
        total, sx, sy = total + 1, sx + x, sy + y
    total = max(total, 1e-6)
    return sx / total, sy / total


def assign(locations_per_level, strides, boxes, classes, num_classes, sizes_of_interest, radius=1.5, centres=None):
    """Per location (levels in order): (label, (l, t, r, b) / stride, ground-truth index or -1)."""
    ranges = size_ranges(sizes_of_interest)
    out = []
    for level, locations in enumerate(locations_per_level):
        low, high = ranges[level]
        stride = strides[level]
        for x, y in locations:
            best, best_area, best_ltrb = -1, INF, (0.0, 0.0, 0.0, 0.0)
            for g, (x1, y1, x2, y2) in enumerate(boxes):
                ltrb = (x - x1, y - y1, x2 - x, y2 - y)
                if radius is None:
                    inside = min(ltrb) > 0
                else:
                    cx, cy = centres[g] if centres is not None else ((x1 + x2) * 0.5, (y1 + y2) * 0.5)
                    rx1, ry1 = max(cx - stride * radius, x1), max(cy - stride * radius, y1)
                    rx2, ry2 = min(cx + stride * radius, x2), min(cy + stride * radius, y2)
                    inside = min(x - rx1, y - ry1, rx2 - x, ry2 - y) > 0
                area = (x2 - x1) * (y2 - y1)
                if inside and low <= max(ltrb) <= high and area < best_area:
                    best, best_area, best_ltrb = g, area, ltrb
            label = classes[best] if best >= 0 else num_classes
            out.append((label, tuple(v / stride for v in best_ltrb) if best >= 0 else None, best))
    return out


def centerness(ltrb):
    l, t, r, b = ltrb
    return math.sqrt(min(l, r) / max(l, r) * (min(t, b) / max(t, b)))


def giou(pred, target):
    """(iou, giou) of two (l, t, r, b) from one location, with AdelaiDet's +1 on intersection and union."""
    pl, pt, pr, pb = pred
    tl, tt, tr, tb = target
    area_t, area_p = (tl + tr) * (tt + tb), (pl + pr) * (pt + pb)
    inter = (min(pl, tl) + min(pr, tr)) * (min(pb, tb) + min(pt, tt))
    enclosing = (max(pl, tl) + max(pr, tr)) * (max(pb, tb) + max(pt, tt))
    union = area_t + area_p - inter
    iou = (inter + 1.0) / (union + 1.0)
    return iou, iou - (enclosing - union) / enclosing


def focal(x, t, alpha=0.25, gamma=2.0):
    """fvcore's sigmoid focal loss of one logit x and target t."""
    p = 1.0 / (1.0 + math.exp(-x))
    ce = max(x, 0.0) - x * t + math.log1p(math.exp(-abs(x)))
    p_t = p * t + (1 - p) * (1 - t)
    return (alpha * t + (1 - alpha) * (1 - t)) * ce * (1 - p_t) ** gamma


def bce(x, t):
    return max(x, 0.0) - x * t + math.log1p(math.exp(-abs(x)))


def fcos_losses(logits, reg_pred, ctr_pred, labels, reg_targets, alpha=0.25, gamma=2.0):
    """The three FCOS losses from nested lists: logits (M, C), reg_pred (M, 4), ctr_pred (M,), labels (M,),
    reg_targets (M, 4) (rows of background locations are ignored)."""
    num_classes = len(logits[0])
    positives = [i for i, label in enumerate(labels) if label != num_classes]
    num_pos = max(float(len(positives)), 1.0)
    cls = sum(focal(logits[i][c], 1.0 if labels[i] == c else 0.0, alpha, gamma)
              for i in range(len(labels)) for c in range(num_classes)) / num_pos
    ctr_t = [centerness(reg_targets[i]) for i in positives]
    gious = [giou(reg_pred[i], reg_targets[i])[1] for i in positives]
    loc = sum((1 - g) * w for g, w in zip(gious, ctr_t)) / max(sum(ctr_t), 1e-6)
    ctr = sum(bce(ctr_pred[i], w) for i, w in zip(positives, ctr_t)) / num_pos
    return {"loss_fcos_cls": cls, "loss_fcos_loc": loc, "loss_fcos_ctr": ctr}


def dice(scores, target, eps=1e-5):
    """1 - 2 sum(p g) / (sum(p^2) + sum(g^2) + eps) of two flat lists."""
    inter = sum(p * g for p, g in zip(scores, target))
    return 1.0 - 2 * inter / (sum(p * p for p in scores) + sum(g * g for g in target) + eps)
