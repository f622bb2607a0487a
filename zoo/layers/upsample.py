"""Fixed bilinear upsampling as Caffe-era segmentation networks built it (fyu/drn, fyu/dilation)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.checks import check_shape

__all__ = ["FixedBilinearUpsample", "bilinear_kernel"]


def bilinear_kernel(size: int, device=None, dtype=None) -> Tensor:
    """The (size, size) bilinear interpolation kernel of Caffe's "bilinear" filler / fyu ``fill_up_weights``."""
    f = math.ceil(size / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    v = 1 - (torch.arange(size, device=device, dtype=torch.float64) / f - c).abs()
    return torch.outer(v, v).to(dtype or torch.get_default_dtype())


class FixedBilinearUpsample(nn.Module):
    """x``factor`` upsampling by a depthwise transposed convolution with fixed bilinear weights.

    Kernel 2 * factor, stride factor, padding factor // 2 (fyu/drn ``DRNSeg.up``, fyu/dilation
    ``make_upsample``): (B, C, h, w) -> (B, C, factor * h, factor * w). The weight (C, 1, 2f, 2f) is a
    persistent buffer named ``weight`` (fyu stores it as a frozen parameter ``up.weight``), so it is
    never trained and checkpoints carrying it load unchanged.
    """

    def __init__(self, channels: int, factor: int = 8, device=None, dtype=None) -> None:
        super().__init__()
        if factor < 2 or factor % 2:
            raise ValueError(f"FixedBilinearUpsample: factor must be an even integer >= 2, got {factor}")
        self.channels, self.factor = channels, factor
        self.register_buffer("weight", torch.empty(channels, 1, 2 * factor, 2 * factor, device=device, dtype=dtype))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        if self.weight.is_meta:
            return
        k = bilinear_kernel(2 * self.factor, device=self.weight.device, dtype=self.weight.dtype)
        self.weight.copy_(k.expand_as(self.weight))

    def forward(self, x: Tensor) -> Tensor:
        check_shape(x, "B,C,H,W", "x", C=self.channels)
        return F.conv_transpose2d(x, self.weight.to(x.dtype), stride=self.factor, padding=self.factor // 2,
                                  groups=self.channels)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, factor={self.factor}"
