"""Depth-guided dynamic filtering of HDFNet: ``DepthDC`` and the ``DDPM`` block (Pang et al., ECCV 2020).

Paper: "Hierarchical Dynamic Filtering Network for RGB-D Salient Object Detection",
https://arxiv.org/abs/2007.06227. Reference code: lartpang/HDFNet ``module/MyModules.py``
(``DepthDC3x3_1/_3/_5``, ``DDPM``, ``DenseLayer``) and ``module/BaseBlocks.py`` (``BasicConv2d``).

DepthDC (one branch), x: (B, Cx, H, W) features, y: (B, Cy, H, W) guidance -> (B, C_out, H, W):
1. kernel = ``generate_kernel(y)``: Conv3x3(Cy -> Cy) -> DenseLayer(Cy) -> Conv1x1(Cy -> Cx*k*k), reshaped
   to (B, Cx, k*k, H, W): one k x k kernel per pixel AND per channel (taps in row-major order);
2. ``out[b, c, p] = sum_t kernel[b, c, t, p] * x[b, c, p + d * offset_t]`` (zero padding d*(k//2)),
   HDFNet's unfold-multiply-sum with dilation d (1, 3 or 5), computed by
   :func:`zoo.ops.dynamic_filter.dynamic_local_filter` (per-channel filters; its reference is the
   unfold-multiply-sum, its fast path a loop over the taps);
3. ``fuse``: Conv3x3(Cx -> C_out) with bias.

DDPM(in_xC, in_yC, out_C): ``down_input`` 1x1 in_xC -> out_C/4; three DepthDC branches (dilations 1, 3, 5)
on the reduced x with the guidance y; ``fuse`` = BasicConv2d 3x3 on cat[x_reduced, b1, b3, b5] -> out_C.
In HDFNet every DDPM is DDPM(64, 64, 64, 3, 4): 64 -> 16 channels, kernels 16*9 = 144 channels.

The ``down_factor`` argument of DepthDC/DDPM is, as in HDFNet, the number ``k`` of dense blocks of the
kernel generator's DenseLayer (whose own channel reduction stays 4).

Parameter names are HDFNet's (``down_input``, ``branch_1/_3/_5``, ``fuse``, ``basicconv.0/1``,
``down``, ``denseblock.i``) except one spelling fix: HDFNet's ``gernerate_kernel`` is ``generate_kernel``
here (a converter renames that one key fragment). Initialisation: PyTorch defaults, as HDFNet.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from zoo.ops._checks import check_shape
from zoo.ops.dynamic_filter import dynamic_local_filter

__all__ = ["DepthDC", "DDPM", "DenseLayer", "BasicConv2d"]


def _reset_children(module: nn.Module) -> None:
    for m in module.modules():
        if m is not module and isinstance(m, (nn.Conv2d, nn.BatchNorm2d)):
            m.reset_parameters()


def _check_guided(x: torch.Tensor, y: torch.Tensor, in_xC: int, in_yC: int) -> None:
    """x (B, in_xC, H, W) and its guidance y (B, in_yC, H, W): the same batch and size."""
    sx = check_shape(x, "B,C,H,W", "x", C=in_xC)
    check_shape(y, "B,C,H,W", "y", B=sx["B"], C=in_yC, H=sx["H"], W=sx["W"])


class BasicConv2d(nn.Module):
    """HDFNet's Conv2d (no bias) + BatchNorm2d + ReLU, parameters under ``basicconv.0`` / ``basicconv.1``."""

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1, groups: int = 1, bias: bool = False, device=None, dtype=None) -> None:
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.basicconv = nn.Sequential(
            nn.Conv2d(in_planes, out_planes, kernel_size, stride, padding, dilation, groups, bias, **kw),
            nn.BatchNorm2d(out_planes, **kw),
            nn.ReLU(inplace=True),
        )

    def reset_parameters(self) -> None:
        _reset_children(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.basicconv(x)


class DenseLayer(nn.Module):
    """HDFNet DenseLayer: 1x1 ``down`` to out_C/down_factor, ``k`` densely connected 3x3 BasicConv2d blocks,
    ``fuse`` BasicConv2d 3x3 on cat[input, last block] -> out_C."""

    def __init__(self, in_C: int, out_C: int, down_factor: int = 4, k: int = 4, device=None, dtype=None) -> None:
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        mid = out_C // down_factor
        if mid < 1:
            raise ValueError(f"DenseLayer: out_C // down_factor must be >= 1, got {out_C} // {down_factor}")
        self.down = nn.Conv2d(in_C, mid, 1, **kw)
        self.denseblock = nn.ModuleList(BasicConv2d(mid * i, mid, 3, 1, 1, **kw) for i in range(1, k + 1))
        self.fuse = BasicConv2d(in_C + mid, out_C, 3, 1, 1, **kw)

    def reset_parameters(self) -> None:
        _reset_children(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        down = self.down(x)
        outs: list[torch.Tensor] = []
        feats = down
        for block in self.denseblock:
            feats = block(torch.cat((*outs, down), dim=1))
            outs.append(feats)
        return self.fuse(torch.cat((x, feats), dim=1))


class DepthDC(nn.Module):
    """One HDFNet DepthDC3x3 branch: x (B, in_xC, H, W), guidance y (B, in_yC, H, W) -> (B, out_C, H, W)."""

    def __init__(self, in_xC: int, in_yC: int, out_C: int, dilation: int = 1, kernel_size: int = 3,
                 down_factor: int = 4, device=None, dtype=None) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"DepthDC: kernel_size must be odd, got {kernel_size}")
        kw = dict(device=device, dtype=dtype)
        self.in_xC, self.in_yC, self.kernel_size, self.dilation = in_xC, in_yC, kernel_size, dilation
        self.fuse = nn.Conv2d(in_xC, out_C, 3, 1, 1, **kw)
        self.generate_kernel = nn.Sequential(
            nn.Conv2d(in_yC, in_yC, 3, 1, 1, **kw),
            DenseLayer(in_yC, in_yC, k=down_factor, **kw),
            nn.Conv2d(in_yC, in_xC * kernel_size ** 2, 1, **kw),
        )

    def reset_parameters(self) -> None:
        _reset_children(self)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_guided(x, y, self.in_xC, self.in_yC)
        kernel = self.generate_kernel(y)
        return self.fuse(dynamic_local_filter(x, kernel, self.kernel_size, self.dilation))


class DDPM(nn.Module):
    """HDFNet dynamic dilated pyramid module: x (B, in_xC, H, W), guidance y (B, in_yC, H, W) -> (B, out_C, H, W)."""

    def __init__(self, in_xC: int, in_yC: int, out_C: int, kernel_size: int = 3, down_factor: int = 4,
                 dilations: Sequence[int] = (1, 3, 5), device=None, dtype=None) -> None:
        super().__init__()
        if out_C // 4 < 1:
            raise ValueError(f"DDPM: out_C must be >= 4, got {out_C}")
        kw = dict(device=device, dtype=dtype)
        self.in_xC, self.in_yC, self.dilations = in_xC, in_yC, tuple(dilations)
        self.mid_c = out_C // 4
        self.down_input = nn.Conv2d(in_xC, self.mid_c, 1, **kw)
        for d in self.dilations:
            setattr(self, f"branch_{d}", DepthDC(self.mid_c, in_yC, self.mid_c, d, kernel_size, down_factor, **kw))
        self.fuse = BasicConv2d((1 + len(self.dilations)) * self.mid_c, out_C, 3, 1, 1, **kw)

    def reset_parameters(self) -> None:
        _reset_children(self)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_guided(x, y, self.in_xC, self.in_yC)
        x = self.down_input(x)
        outs = [getattr(self, f"branch_{d}")(x, y) for d in self.dilations]
        return self.fuse(torch.cat((x, *outs), dim=1))
