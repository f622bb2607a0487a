"""Deformable ConvNets v1/v2 operators: deformable convolution and deformable RoI pooling.

Deformable convolution: fast = zoo's dispatch on the CPU (F.grid_sample of every tap + one matmul, see
zoo.ops.deform_conv.deform_conv2d_implementation), torchvision = torchvision.ops.deform_conv2d (zoo's
choice on CUDA), the baseline of the speed-up."""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d as tv_deform_conv2d
from torchvision.ops import roi_align

from benchmarks._bench import Case
from zoo.ops.deform_conv import deform_conv2d_reference, modulated_deform_conv2d
from zoo.ops.deform_roi_pool import deform_roi_pool, deform_roi_pool_reference


def _deform_conv_res5() -> dict[str, Callable[[], Any]]:
    # ResNet res5 3x3 conv as in DCNv1 (stride 1, dilation 2, padding 2), one deformable group.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 512, 32, 32, generator=g)
    weight = torch.randn(512, 512, 3, 3, generator=g) * 0.01
    offset = torch.randn(1, 18, 32, 32, generator=g)
    mask = torch.rand(1, 9, 32, 32, generator=g)
    return {
        "fast": lambda: modulated_deform_conv2d(x, offset, mask, weight, None, 1, 2, 2),
        "torchvision": lambda: tv_deform_conv2d(x, offset, weight, None, 1, 2, 2, mask),
        "reference": lambda: deform_conv2d_reference(x, offset, weight, None, 1, 2, 2, mask=mask),
        "conv2d (no deformation)": lambda: F.conv2d(x, weight, None, 1, 2, 2),
    }


def _deform_conv_res5_train() -> dict[str, Callable[[], Any]]:
    """One optimisation step (forward + backward to input, offset, mask and weight) at the res5 setting."""
    g = torch.Generator().manual_seed(0)
    args = [torch.randn(1, 512, 32, 32, generator=g), torch.randn(1, 18, 32, 32, generator=g),
            torch.rand(1, 9, 32, 32, generator=g), torch.randn(512, 512, 3, 3, generator=g) * 0.01]
    for t in args:
        t.requires_grad_()
    x, offset, mask, weight = args

    def step(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            with torch.enable_grad():
                fn().sum().backward()
        return run

    return {
        "fast": step(lambda: modulated_deform_conv2d(x, offset, mask, weight, None, 1, 2, 2)),
        "torchvision": step(lambda: tv_deform_conv2d(x, offset, weight, None, 1, 2, 2, mask)),
    }


def _rois(k: int, size: int, g: torch.Generator) -> torch.Tensor:
    xy = torch.rand(k, 2, generator=g) * size * 0.7
    wh = torch.rand(k, 2, generator=g) * size * 0.3 + 16
    return torch.cat([torch.zeros(k, 1), xy, xy + wh], dim=1)


def _deform_roi_pool_case(sampling_ratio: int) -> Callable[[], dict[str, Callable[[], Any]]]:
    def setup() -> dict[str, Callable[[], Any]]:
        # FPN P3-like map (stride 8 of a 400x400 image), 64 RoIs of 16..136 px, 7x7 bins.
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, 256, 50, 50, generator=g)
        rois = _rois(64, 400, g)
        offset = torch.randn(64, 2, 7, 7, generator=g) * 0.1
        return {
            "fast": lambda: deform_roi_pool(x, rois, offset, 7, 0.125, sampling_ratio),
            "reference": lambda: deform_roi_pool_reference(x, rois, offset, 7, 0.125, sampling_ratio),
            "torchvision roi_align (no offsets)": lambda: roi_align(x, rois, 7, 0.125, sampling_ratio, aligned=True),
        }
    return setup


def cases() -> list[Case]:
    return [
        # fast = the CPU dispatch (grid_sample + matmul); the target is against torchvision's kernel
        Case("ModulatedDeformConv2d", "res5 1x512x32x32 -> 512, 3x3, dilation 2, dg 1", _deform_conv_res5,
             baseline="torchvision", repeats=3),
        Case("ModulatedDeformConv2d", "train step (fwd+bwd), res5 1x512x32x32 -> 512, 3x3, dilation 2",
             _deform_conv_res5_train, baseline="torchvision", repeats=3),
        Case("DeformRoIPool", "C=256 50x50, 64 RoIs, 7x7, sampling_ratio 2", _deform_roi_pool_case(2), repeats=3),
        Case("DeformRoIPool", "C=256 50x50, 64 RoIs, 7x7, adaptive sampling", _deform_roi_pool_case(0), repeats=3),
    ]
