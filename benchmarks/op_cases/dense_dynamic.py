"""Content-adaptive dense operators at their papers' settings (scaled to fit a 2-core CPU).

Each case times the module's fast path against the same module computed with the plain reference
functionals (eval mode, no grad):
- DMNet DCM: 2048 -> 512 channels, k = 7, 2 x 64 x 64 (DMNet: ResNet-101 OS8 features, 512 x 512 crops);
- HDFNet DDPM(64, 64, 64): 2 x 80 x 80 (the 1/4-scale stage of a 320 x 320 input); reference = HDFNet's
  unfold-multiply-sum;
- CaC: 512 channels, s = 3, dilations 1/3/5, 1 x 65 x 65 (OS8 of 513 x 513), heads 1 and 4;
- CondInst dynamic mask head: 50 instances, 8 + 2 channels, 100 x 136 (stride 8 of 800 x 1088);
- Yu & Koltun basic context module: 21 channels at 64 x 64 (Dilation8 on VOC).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from benchmarks._bench import Case
from zoo.ops.cac import ContextAdaptiveConv, cac_kernels_reference, cac_weighting_reference
from zoo.ops.context_module import ContextModule, context_module_reference
from zoo.ops.depth_dc import DDPM, DepthDC
from zoo.ops.dmnet import DynamicConvModule, dynamic_depthwise_conv2d_reference
from zoo.ops.dynamic_filter import dynamic_local_filter_reference
from zoo.ops.dynamic_mask_head import DynamicMaskHead, dynamic_mask_head, dynamic_mask_head_reference

Setup = Callable[[], dict[str, Callable[[], Any]]]


def _dcm_reference(m: DynamicConvModule, x: torch.Tensor) -> torch.Tensor:
    out = dynamic_depthwise_conv2d_reference(m.input_redu_conv(x), m.generate_filters(x))
    return m.activate(m.norm(out))


def _dcm(b: int, c_in: int, c: int, k: int, h: int, w: int) -> Setup:
    def setup() -> dict[str, Callable[[], Any]]:
        torch.manual_seed(0)
        m = DynamicConvModule(c_in, c, k).eval()
        x = torch.randn(b, c_in, h, w)
        return {"fast": lambda: m(x), "reference": lambda: _dcm_reference(m, x)}

    return setup


def _depth_dc_reference(m: DepthDC, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return m.fuse(dynamic_local_filter_reference(x, m.generate_kernel(y), m.kernel_size, m.dilation))


def _ddpm_reference(m: DDPM, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = m.down_input(x)
    return m.fuse(torch.cat((x, *[_depth_dc_reference(getattr(m, f"branch_{d}"), x, y) for d in m.dilations]), 1))


def _ddpm(b: int, c: int, h: int, w: int) -> Setup:
    def setup() -> dict[str, Callable[[], Any]]:
        torch.manual_seed(0)
        m = DDPM(c, c, c, 3, 4).eval()
        x, y = torch.randn(b, c, h, w), torch.randn(b, c, h, w)
        return {"fast": lambda: m(x, y), "reference": lambda: _ddpm_reference(m, x, y)}

    return setup


def _cac_reference(m: ContextAdaptiveConv, x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    s, n, heads = m.kernel_size, m.num_kernel_sets, m.heads
    d = cac_kernels_reference(m.key_conv(x).reshape(b * heads, c, h, w), m.query_conv(x).reshape(b * heads, -1, h, w))
    d = d.reshape(b, heads, c, n, s, s).transpose(2, 3)
    d = m.kernel_bn(d.reshape(b, heads * n * c, s, s)).reshape(b, heads, n, c, s, s)
    out = x * cac_weighting_reference(x, d, m.dilations, m.fusion)
    return out + F.relu(m.global_conv(F.adaptive_avg_pool2d(x, 1)))


def _cac(b: int, c: int, h: int, w: int, heads: int) -> Setup:
    def setup() -> dict[str, Callable[[], Any]]:
        torch.manual_seed(0)
        m = ContextAdaptiveConv(c, heads=heads).eval()
        x = torch.randn(b, c, h, w)
        return {"fast": lambda: m(x), "reference": lambda: _cac_reference(m, x)}

    return setup


def _mask_head(n: int, h: int, w: int) -> Setup:
    def setup() -> dict[str, Callable[[], Any]]:
        g = torch.Generator().manual_seed(0)
        inputs = torch.randn(n, 10, h, w, generator=g)
        params = torch.randn(n, 169, generator=g) * 0.3
        nums = ([80, 64, 8], [8, 8, 1])
        head = DynamicMaskHead()
        feats = torch.randn(2, 8, h, w, generator=g)
        im_inds = torch.randint(0, 2, (n,), generator=g)
        locs = torch.rand(n, 2, generator=g) * torch.tensor([8.0 * w, 8.0 * h])
        levels = torch.randint(0, 5, (n,), generator=g)
        return {
            "fast": lambda: dynamic_mask_head(inputs, params, 8, *nums),
            "reference": lambda: dynamic_mask_head_reference(inputs, params, 8, *nums),
            "grouped_conv (AdelaiDet)": lambda: dynamic_mask_head(inputs, params, 8, *nums, impl="grouped_conv"),
            "module (coords + FCN + x2 aligned_bilinear)": lambda: head(feats, 8, params, im_inds, locs, levels),
        }

    return setup


def _context(b: int, c: int, h: int, w: int) -> Setup:
    def setup() -> dict[str, Callable[[], Any]]:
        torch.manual_seed(0)
        m = ContextModule(c).eval()
        x = torch.rand(b, c, h, w)
        ws, bs = [l.weight for l in m.layers()], [l.bias for l in m.layers()]
        return {"fast": lambda: m(x), "reference": lambda: context_module_reference(x, ws, bs)}

    return setup


def cases() -> list[Case]:
    return [
        Case("DynamicConvModule", "DMNet DCM 2048->512 k=7, 2x64x64", _dcm(2, 2048, 512, 7, 64, 64), repeats=3),
        Case("DDPM", "HDFNet DDPM(64,64,64) dilations 1/3/5, 2x80x80", _ddpm(2, 64, 80, 80), repeats=3),
        Case("ContextAdaptiveConv", "CaC C=512 s=3 dil 1/3/5 heads=1, 1x65x65", _cac(1, 512, 65, 65, 1), repeats=3),
        Case("ContextAdaptiveConv", "CaC C=512 s=3 dil 1/3/5 heads=4, 1x65x65", _cac(1, 512, 65, 65, 4), repeats=3),
        Case("DynamicMaskHead", "CondInst 50 instances, 10->8->8->1, 100x136", _mask_head(50, 100, 136), repeats=3),
        Case("ContextModule", "Yu-Koltun basic, C=21, 1x64x64", _context(1, 21, 64, 64), repeats=3),
    ]
