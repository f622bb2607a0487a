"""Multi-scale input fusion (DeepLab v2's multi-scale inputs, "MSC").

Paper: Chen et al., "DeepLab: Semantic Image Segmentation with Deep Convolutional Nets, Atrous
Convolution, and Fully Connected CRFs", TPAMI 2017, Sec. 3.3 and 4.1, https://arxiv.org/abs/1606.00915
(the idea is from Chen et al., "Attention to Scale", CVPR 2016). Port checked against
kazuto1011/deeplab-pytorch ``libs/models/msc.py``.

What it computes, for an input ``x`` (B, C, H, W), a network ``f`` returning logits (B, K, h_s, w_s)
and scales s_1..s_n (one of them 1.0):

    y_s   = f(resize(x, s))                     # per-scale logits at their own resolution
    fused = max_s resize(y_s, size of y_1.0)     # element-wise max (or mean) over scales

Interpretation choices:
- ``align_corners=False`` (default) follows kazuto1011's MSC, under which the published PyTorch
  DeepLab v2 weights were evaluated: the input is resized with
  ``F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)`` (output size
  floor(H * s)) and logits are resized to the scale-1 logits' size with ``align_corners=False``.
- ``align_corners=True`` follows the original Caffe DeepLab v2 ``Interp`` layers: the input is resized
  to floor((H - 1) * s) + 1 (e.g. 513 -> 385 at 0.75, 257 at 0.5) and everything is resized with
  ``align_corners=True``.
- The scale 1.0 input is passed through unresized. ``scales`` must contain 1.0: the fused output has
  the scale-1 logits' size.
- With ``return_all=True`` (the module's default in training mode, as kazuto1011's MSC) the result is
  the list ``[y_s for s in scales] + [fused]``: per-scale logits at their own resolution in the order
  of ``scales``, then the fused logits (DeepLab v2 puts a loss on each). Otherwise only ``fused``.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.ops._checks import check_floating, check_shape

__all__ = ["MultiScaleFusion", "multiscale_fusion", "multiscale_fusion_reference"]

_FUSE = ("max", "mean")


def _check_args(x: Tensor, scales: Sequence[float], fuse: str) -> tuple[float, ...]:
    check_floating(x, "x")
    check_shape(x, "B,C,H,W", "x")
    scales = tuple(float(s) for s in scales)
    if 1.0 not in scales:
        raise ValueError(f"multi-scale fusion: scales must contain 1.0 (the output size), got {scales}")
    if any(s <= 0 for s in scales):
        raise ValueError(f"multi-scale fusion: scales must be positive, got {scales}")
    if fuse not in _FUSE:
        raise ValueError(f"multi-scale fusion: fuse must be one of {_FUSE}, got {fuse!r}")
    return scales


def _resize_input(x: Tensor, scale: float, align_corners: bool) -> Tensor:
    if align_corners:
        h, w = x.shape[-2:]
        size = (math.floor((h - 1) * scale) + 1, math.floor((w - 1) * scale) + 1)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)


def multiscale_fusion_reference(
    fn: Callable[[Tensor], Tensor],
    x: Tensor,
    scales: Sequence[float] = (1.0, 0.75, 0.5),
    fuse: str = "max",
    align_corners: bool = False,
    return_all: bool = False,
) -> Tensor | list[Tensor]:
    """Plain version: every scale (1.0 included) is resized, all logits are resized and stacked,
    then reduced with ``amax`` / ``mean`` over the stack."""
    scales = _check_args(x, scales, fuse)
    logits = [fn(_resize_input(x, s, align_corners)) for s in scales]
    size = logits[scales.index(1.0)].shape[-2:]
    stacked = torch.stack(
        [F.interpolate(y, size=size, mode="bilinear", align_corners=align_corners) for y in logits]
    )
    fused = stacked.amax(dim=0) if fuse == "max" else stacked.mean(dim=0)
    return logits + [fused] if return_all else fused


def multiscale_fusion(
    fn: Callable[[Tensor], Tensor],
    x: Tensor,
    scales: Sequence[float] = (1.0, 0.75, 0.5),
    fuse: str = "max",
    align_corners: bool = False,
    return_all: bool = False,
) -> Tensor | list[Tensor]:
    """Run ``fn`` on ``x`` resized by each scale and fuse the logits (see the module docstring).

    x: (B, C, H, W); ``fn`` maps (B, C, H', W') to (B, K, h', w'). Returns (B, K, h, w) with (h, w)
    the scale-1 output size, or ``[y_s for s in scales] + [fused]`` when ``return_all``.
    The scale-1 pass is not resized and the fusion is a running maximum / sum (no stacked copy).
    """
    scales = _check_args(x, scales, fuse)
    logits = [fn(x if s == 1.0 else _resize_input(x, s, align_corners)) for s in scales]
    ref = logits[scales.index(1.0)]
    size = ref.shape[-2:]
    fused = ref
    for s, y in zip(scales, logits):
        if y is ref:
            continue
        y = F.interpolate(y, size=size, mode="bilinear", align_corners=align_corners)
        fused = torch.maximum(fused, y) if fuse == "max" else fused + y
    if fuse == "mean":
        fused = fused / len(scales)
    return logits + [fused] if return_all else fused


class MultiScaleFusion(nn.Module):
    """Wrap ``module`` so that it runs on several input scales and fuses the logits.

    Args:
        module: maps (B, C, H, W) to logits (B, K, h, w).
        scales: input scales; must contain 1.0. Default (1.0, 0.75, 0.5) as DeepLab v2.
        fuse: "max" (DeepLab v2) or "mean".
        align_corners: False as kazuto1011's MSC, True as Caffe DeepLab v2 (see the module docstring).
        return_all: None (default) returns the per-scale list plus the fused logits in training mode
            and only the fused logits in eval mode, as kazuto1011's MSC; True / False force either.

    The wrapped module's parameters are shared by all scales; its state-dict keys get the prefix
    ``module.``.
    """

    def __init__(
        self,
        module: nn.Module,
        scales: Sequence[float] = (1.0, 0.75, 0.5),
        fuse: str = "max",
        align_corners: bool = False,
        return_all: bool | None = None,
    ) -> None:
        super().__init__()
        scales = tuple(float(s) for s in scales)
        if 1.0 not in scales or any(s <= 0 for s in scales):
            raise ValueError(f"MultiScaleFusion: scales must be positive and contain 1.0, got {scales}")
        if fuse not in _FUSE:
            raise ValueError(f"MultiScaleFusion: fuse must be one of {_FUSE}, got {fuse!r}")
        self.module = module
        self.scales = scales
        self.fuse = fuse
        self.align_corners = align_corners
        self.return_all = return_all

    def extra_repr(self) -> str:
        return f"scales={self.scales}, fuse={self.fuse!r}, align_corners={self.align_corners}"

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        return_all = self.training if self.return_all is None else self.return_all
        return multiscale_fusion(self.module, x, self.scales, self.fuse, self.align_corners, return_all)
