"""Salient object detection metrics: MAE, S-measure, adaptive and max F-measure.

Metrics (torch only, per image; :class:`SaliencyMetrics` averages them over a dataset the way the
standard RGB-D SOD evaluation code, e.g. PySODMetrics used by HDFNet's authors, does):

- MAE: mean absolute error between the prediction in [0, 1] and the binary ground truth.
- S-measure (Fan et al., ICCV 2017, https://arxiv.org/abs/1708.00786): ``alpha * S_object +
  (1 - alpha) * S_region`` with alpha = 0.5; an all-background GT gives ``1 - mean(pred)``, an
  all-foreground GT ``mean(pred)``; clipped at 0.
- F-measure with beta^2 = 0.3: ``(1 + b) P R / (b P + R)``.
  * adaptive: the prediction binarised at ``min(2 * mean(pred), 1)`` (Achanta et al. 2009);
  * max: the prediction quantised to 0..255 (``floor(pred * 255)``), binarised at every threshold
    t = 0..255 (``pred >= t``), one F value per threshold; the dataset curve is the mean of the
    per-image curves and max-F is its maximum.

Inputs: ``pred`` (H, W) float in [0, 1] (a saliency map, e.g. the ``rgbd-saliency`` postprocess);
``gt`` (H, W) bool, or numbers binarised at 0.5 (uint8 masks: at 128). By default each prediction
is min-max normalised when it is not constant (PySODMetrics' ``_prepare_data``); pass
``normalize=False`` to score it as is. The metrics branch on data (S-measure's centroid split), so
they synchronise with the host; they are evaluation code, not part of any forward pass.

The ``salient-object-detection`` task (presets, evaluation, ``zoo predict``) is
:mod:`zoo.tasks.salient_object_detection`.
"""
from __future__ import annotations

import torch
from torch import Tensor

from zoo.errors import InputError

__all__ = ["mae", "s_measure", "f_measure_adaptive", "f_measure_curve", "SaliencyMetrics"]

BETA2 = 0.3
_EPS = torch.finfo(torch.float64).eps


def _prepare(pred: Tensor, gt: Tensor, normalize: bool) -> tuple[Tensor, Tensor]:
    pred, gt = torch.as_tensor(pred), torch.as_tensor(gt)
    if pred.dim() == 3 and pred.shape[0] == 1:
        pred = pred[0]
    if gt.dim() == 3 and gt.shape[0] == 1:
        gt = gt[0]
    if pred.dim() != 2 or gt.shape != pred.shape:
        raise InputError(f"pred and gt must be (H, W) maps of the same size, got {tuple(pred.shape)} and {tuple(gt.shape)}")
    if not pred.is_floating_point():
        raise InputError(f"pred must be a float saliency map in [0, 1], got {pred.dtype}")
    pred = pred.double()
    if gt.dtype == torch.bool:
        gtb = gt
    elif gt.dtype == torch.uint8:
        gtb = gt >= 128
    else:
        gtb = gt > 0.5
    if normalize:
        lo, hi = pred.min(), pred.max()
        if hi > lo:
            pred = (pred - lo) / (hi - lo)
    return pred, gtb


def mae(pred: Tensor, gt: Tensor, normalize: bool = True) -> Tensor:
    """Mean absolute error of one saliency map (H, W) against its binary GT -> scalar tensor."""
    p, g = _prepare(pred, gt, normalize)
    return (p - g.double()).abs().mean()


def _s_object(pred: Tensor, gt: Tensor) -> Tensor:
    x = pred[gt]
    mean = x.mean()
    std = x.std(correction=1) if x.numel() > 1 else x.new_zeros(())
    return 2 * mean / (mean * mean + 1 + std + _EPS)


def _ssim(pred: Tensor, gt: Tensor) -> Tensor:
    n = pred.numel()
    x, y = pred.mean(), gt.mean()
    denom = max(n - 1, 1)
    sx = ((pred - x) ** 2).sum() / denom
    sy = ((gt - y) ** 2).sum() / denom
    sxy = ((pred - x) * (gt - y)).sum() / denom
    alpha = 4 * x * y * sxy
    beta = (x * x + y * y) * (sx + sy)
    if alpha != 0:
        return alpha / (beta + _EPS)
    return pred.new_ones(()) if beta == 0 else pred.new_zeros(())


def s_measure(pred: Tensor, gt: Tensor, alpha: float = 0.5, normalize: bool = True) -> Tensor:
    """Structure measure (Fan et al. 2017) of one map (H, W) against its GT -> scalar tensor in [0, 1]."""
    p, g = _prepare(pred, gt, normalize)
    y = g.double().mean()
    if y == 0:
        return 1 - p.mean()
    if y == 1:
        return p.mean()
    gf = g.double()
    # object-aware similarity
    s_obj = y * _s_object(p, g) + (1 - y) * _s_object(1 - p, ~g)
    # region-aware similarity: split at the GT centroid (1-based, as the reference implementations)
    h, w = g.shape
    idx = g.nonzero().double().mean(0).round()
    cy, cx = int(idx[0]) + 1, int(idx[1]) + 1
    area = h * w
    w1, w2, w3 = cx * cy / area, cy * (w - cx) / area, (h - cy) * cx / area
    w4 = 1 - w1 - w2 - w3
    parts = [(slice(0, cy), slice(0, cx)), (slice(0, cy), slice(cx, w)), (slice(cy, h), slice(0, cx)),
             (slice(cy, h), slice(cx, w))]
    s_reg = p.new_zeros(())
    for wt, (rs, cs) in zip((w1, w2, w3, w4), parts):
        if wt > 0:
            s_reg = s_reg + wt * _ssim(p[rs, cs], gf[rs, cs])
    return (alpha * s_obj + (1 - alpha) * s_reg).clamp(min=0)


def _f(precision: Tensor, recall: Tensor, beta2: float) -> Tensor:
    num = (1 + beta2) * precision * recall
    den = beta2 * precision + recall
    return torch.where(num == 0, torch.zeros_like(num), num / torch.where(num == 0, torch.ones_like(den), den))


def f_measure_adaptive(pred: Tensor, gt: Tensor, beta2: float = BETA2, normalize: bool = True) -> Tensor:
    """F-measure of one map binarised at ``min(2 * mean(pred), 1)`` -> scalar tensor (0 when no hit)."""
    p, g = _prepare(pred, gt, normalize)
    binary = p >= (2 * p.mean()).clamp(max=1)
    tp = (binary & g).sum().double()
    precision = tp / binary.sum().clamp(min=1)
    recall = tp / g.sum().clamp(min=1)
    return _f(precision, recall, beta2)


def f_measure_curve(pred: Tensor, gt: Tensor, beta2: float = BETA2, normalize: bool = True) -> Tensor:
    """F-measure of one map at the 256 thresholds t = 0..255 of ``floor(pred * 255) >= t`` -> (256,)."""
    p, g = _prepare(pred, gt, normalize)
    q = (p * 255).floor().clamp(0, 255).long().flatten()
    gf = g.flatten()
    fg_hist = torch.bincount(q[gf], minlength=256).double()
    bg_hist = torch.bincount(q[~gf], minlength=256).double()
    # count of pixels with value >= t: reversed cumulative sum
    tp = fg_hist.flip(0).cumsum(0).flip(0)
    fp = bg_hist.flip(0).cumsum(0).flip(0)
    precision = tp / (tp + fp).clamp(min=1)
    recall = tp / gf.sum().clamp(min=1)
    return _f(precision, recall, beta2)


class SaliencyMetrics:
    """Dataset-level MAE, S-measure, adaptive F and max F (mean F curve over images, then max).

    ``update(pred, gt)`` takes one (H, W) map or a batch (B, H, W) / (B, 1, H, W) of maps and GTs.
    ``compute()`` returns ``{"mae", "s_measure", "adaptive_f", "max_f", "mean_f"}`` as floats.
    """

    def __init__(self, beta2: float = BETA2, normalize: bool = True) -> None:
        self.beta2, self.normalize = beta2, normalize
        self.count = 0
        self._mae = self._sm = self._adp = 0.0
        self._curve = torch.zeros(256, dtype=torch.float64)

    def update(self, pred: Tensor, gt: Tensor) -> None:
        pred, gt = torch.as_tensor(pred), torch.as_tensor(gt)
        if pred.dim() == 4:
            pred = pred.flatten(0, 1) if pred.shape[1] == 1 else pred
        if gt.dim() == 4:
            gt = gt.flatten(0, 1) if gt.shape[1] == 1 else gt
        if pred.dim() == 2:
            pred, gt = pred[None], gt[None]
        if pred.dim() != 3 or gt.shape != pred.shape:
            raise InputError(f"pred and gt must be (H, W), (B, H, W) or (B, 1, H, W) of the same size, "
                             f"got {tuple(pred.shape)} and {tuple(gt.shape)}")
        for p, g in zip(pred, gt):
            self._mae += float(mae(p, g, self.normalize))
            self._sm += float(s_measure(p, g, normalize=self.normalize))
            self._adp += float(f_measure_adaptive(p, g, self.beta2, self.normalize))
            self._curve += f_measure_curve(p, g, self.beta2, self.normalize).cpu()
            self.count += 1

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            raise ValueError("SaliencyMetrics.compute() called before any update()")
        curve = self._curve / self.count
        return {"mae": self._mae / self.count, "s_measure": self._sm / self.count,
                "adaptive_f": self._adp / self.count, "max_f": float(curve.max()), "mean_f": float(curve.mean())}
