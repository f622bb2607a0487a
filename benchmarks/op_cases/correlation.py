"""FlowNetC correlation at the paper's setting: conv3 features 1x256x48x64 (384x512 input), md 20, stride 2.

Outside reference (optional): spatial-correlation-sampler 0.5.0, the op behind ClementPinard/FlowNetPytorch,
called as FlowNetPytorch's ``correlate`` does (without its LeakyReLU). It is the baseline when importable.

End to end: zoo's ``flownetc`` (random weights, eval, 1x6x384x512) against the same network with its
correlation module replaced by FlowNetPytorch's ``correlate`` computation (spatial_correlation_sample,
kernel 1, patch 21, dilation_patch 2, divided by C; the LeakyReLU is the model's, as in FlowNetPytorch).
FlowNetPytorch's own module is not vendored here; zoo's port has its layers and state-dict keys, and the
one remaining difference is that zoo runs both frames through conv1..conv3 as one batch of 2 where
FlowNetPytorch makes two batch-1 calls (same FLOPs).
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


def _scs_correlation(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    from spatial_correlation_sampler import spatial_correlation_sample

    r = MAX_DISPLACEMENT // STRIDE
    out = spatial_correlation_sample(f1, f2, kernel_size=1, patch_size=2 * r + 1, stride=1, padding=0,
                                     dilation_patch=STRIDE)
    b, ph, pw, h, w = out.shape
    return out.view(b, ph * pw, h, w) / f1.shape[1]


class _ScsCorrelation(torch.nn.Module):
    def forward(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        return _scs_correlation(f1, f2)


def _setup_flownetc() -> dict:
    from zoo.archs import get_arch

    torch.manual_seed(0)
    x = torch.randn(1, 6, 384, 512, generator=torch.Generator().manual_seed(0))
    impls = {}
    zoo_model = get_arch("flownetc")().eval()
    impls["zoo"] = lambda: zoo_model(x)
    if _has_scs():
        scs_model = get_arch("flownetc")().eval()
        scs_model.load_state_dict(zoo_model.state_dict())
        scs_model.corr = _ScsCorrelation()
        impls["spatial_correlation_sampler"] = lambda: scs_model(x)
    return impls


def cases() -> list[Case]:
    return [Case(
        op="correlation",
        setting=f"B={B} C={C} {H}x{W} max_displacement={MAX_DISPLACEMENT} stride={STRIDE} k=1 (FlowNetC)",
        setup=_setup,
        baseline="spatial_correlation_sampler" if _has_scs() else "reference",
        repeats=5,
    ), Case(
        op="FlowNetC",
        setting="end to end, 1x6x384x512, random weights, eval (correlation md 20, stride 2)",
        setup=_setup_flownetc,
        baseline="spatial_correlation_sampler" if _has_scs() else "zoo",
        repeats=3,
    )]
