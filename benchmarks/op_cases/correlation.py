"""FlowNetC correlation at the paper's setting: conv3 features 1x256x48x64 (384x512 input), md 20, stride 2.

Outside reference (optional): spatial-correlation-sampler 0.5.0, the op behind ClementPinard/FlowNetPytorch,
called as FlowNetPytorch's ``correlate`` does (without its LeakyReLU). It is the baseline when importable.
"""
from __future__ import annotations

import importlib.util

import torch

from benchmarks._bench import Case
from zoo.ops.correlation import correlation, correlation_reference

B, C, H, W = 1, 256, 48, 64
MAX_DISPLACEMENT, STRIDE = 20, 2


def _has_scs() -> bool:
    return importlib.util.find_spec("spatial_correlation_sampler") is not None


def _setup() -> dict:
    g = torch.Generator().manual_seed(0)
    f1 = torch.randn(B, C, H, W, generator=g)
    f2 = torch.randn(B, C, H, W, generator=g)
    impls = {
        "fast": lambda: correlation(f1, f2, MAX_DISPLACEMENT, STRIDE),
        "reference": lambda: correlation_reference(f1, f2, MAX_DISPLACEMENT, STRIDE),
    }
    if _has_scs():
        from spatial_correlation_sampler import spatial_correlation_sample

        r = MAX_DISPLACEMENT // STRIDE

        def scs() -> torch.Tensor:
            out = spatial_correlation_sample(f1, f2, kernel_size=1, patch_size=2 * r + 1, stride=1,
                                             padding=0, dilation_patch=STRIDE)
            return out.view(B, (2 * r + 1) ** 2, H, W) / C

        impls["spatial_correlation_sampler"] = scs
    return impls


def cases() -> list[Case]:
    return [Case(
        op="correlation",
        setting=f"B={B} C={C} {H}x{W} max_displacement={MAX_DISPLACEMENT} stride={STRIDE} k=1 (FlowNetC)",
        setup=_setup,
        baseline="spatial_correlation_sampler" if _has_scs() else "reference",
        repeats=5,
    )]
