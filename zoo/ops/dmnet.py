"""Dynamic Convolutional Module of DMNet (He, Deng, Qiao; ICCV 2019).

Paper: "Dynamic Multi-scale Filters for Semantic Segmentation",
https://openaccess.thecvf.com/content_ICCV_2019/papers/He_Dynamic_Multi-Scale_Filters_for_Semantic_Segmentation_ICCV_2019_paper.pdf
Reference code: open-mmlab/mmsegmentation ``mmseg/models/decode_heads/dm_head.py`` (class ``DCM``).

What a DCM with filter size k computes, x: (B, C_in, H, W) -> (B, C, H, W):
1. filters = ``filter_gen_conv`` (1x1, C_in -> C, with bias) applied to ``adaptive_avg_pool2d(x, k)``:
   one k x k depthwise filter per sample and channel, (B, C, k, k);
2. features = ``input_redu_conv`` (1x1 C_in -> C + norm + ReLU) of x;
3. per-sample depthwise convolution of the features with the filters (one grouped convolution with
   B*C groups, ``zoo.ops.dynamic_filter.per_sample_conv2d``), zero 'same' padding; for even k the extra
   row/column goes to the top/left (mmseg pads (pad+1, pad) with pad = (k-1)//2);
4. ``norm`` + ``activate`` (ReLU); optional ``fusion_conv`` (1x1 + norm + ReLU) when ``fusion=True``.

The functional :func:`dynamic_depthwise_conv2d` is step 3 (optionally dilated); the filters are
correlation kernels (PyTorch convention, no flip).

Parameter names are mmseg's (``filter_gen_conv``, ``input_redu_conv.conv``, ``input_redu_conv.bn``,
``norm``, ``fusion_conv.conv``/``.bn``), so a ``decode_head.dcm_modules.i.*`` sub-dict of an mmseg DMNet
checkpoint loads into ``DynamicConvModule`` without renames. Initialisation follows mmcv: ConvModule
convs kaiming-normal (fan_out, ReLU), norms weight 1 / bias 0, ``filter_gen_conv`` PyTorch's default.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.ops._checks import check_floating, check_same, check_shape
from zoo.ops.dynamic_filter import per_sample_conv2d

__all__ = ["DynamicConvModule", "dynamic_depthwise_conv2d", "dynamic_depthwise_conv2d_reference", "same_padding"]


def same_padding(kernel_size: int, dilation: int = 1) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding that keeps H, W; the extra pixel of an even extent goes
    left/top (mmseg DCM convention)."""
    extent = dilation * (kernel_size - 1)
    lo, hi = extent - extent // 2, extent // 2
    return (lo, hi, lo, hi)


def _check_dynamic(x: torch.Tensor, filters: torch.Tensor) -> None:
    s = check_shape(x, "B,C,H,W", "x")
    check_shape(filters, "B,C,kH,kW", "filters", B=s["B"], C=s["C"])
    check_floating(x, "x")
    check_same(x, filters, "dynamic_depthwise_conv2d(x, filters)")


def dynamic_depthwise_conv2d(x: torch.Tensor, filters: torch.Tensor, dilation: int = 1) -> torch.Tensor:
    """Per-sample depthwise convolution: ``out[b, c] = x[b, c] (*) filters[b, c]`` with 'same' padding.

    x: (B, C, H, W); filters: (B, C, kH, kW) -> (B, C, H, W). Fast path: one grouped convolution over
    B*C groups (:func:`zoo.ops.dynamic_filter.per_sample_conv2d`).
    """
    _check_dynamic(x, filters)
    kh, kw = filters.shape[-2:]
    ph, pw = same_padding(kh, dilation), same_padding(kw, dilation)
    xp = F.pad(x, (pw[0], pw[1], ph[0], ph[1]))
    return per_sample_conv2d(xp, filters.unsqueeze(2), dilation=dilation, groups=x.shape[1])


def dynamic_depthwise_conv2d_reference(x: torch.Tensor, filters: torch.Tensor, dilation: int = 1) -> torch.Tensor:
    """Plain implementation: loop over the kernel taps, multiply the shifted input by the tap weight."""
    _check_dynamic(x, filters)
    h, w = x.shape[-2:]
    kh, kw = filters.shape[-2:]
    ph, pw = same_padding(kh, dilation), same_padding(kw, dilation)
    xp = F.pad(x, (pw[0], pw[1], ph[0], ph[1]))
    out = torch.zeros_like(x)
    for i in range(kh):
        for j in range(kw):
            tap = filters[:, :, i, j, None, None]
            out = out + tap * xp[:, :, i * dilation: i * dilation + h, j * dilation: j * dilation + w]
    return out


class _ConvModule(nn.Module):
    """1x1 conv + BatchNorm + ReLU with mmcv ``ConvModule`` parameter names (``conv``, ``bn``)."""

    def __init__(self, in_channels: int, out_channels: int, norm: bool, device=None, dtype=None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=not norm, device=device, dtype=dtype)
        self.bn = nn.BatchNorm2d(out_channels, device=device, dtype=dtype) if norm else None
        self.activate = nn.ReLU(inplace=True)

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)
        if self.bn is not None:
            self.bn.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.activate(x)


class DynamicConvModule(nn.Module):
    """DMNet DCM: (B, in_channels, H, W) -> (B, channels, H, W) with content-generated k x k filters.

    Args: ``in_channels`` (2048 in DMNet), ``channels`` (512), ``filter_size`` k (1, 3, 5, 7 in DMNet),
    ``fusion`` (mmseg's optional 1x1 fusion ConvModule, off in the released configs), ``norm``
    (BatchNorm after the reduction conv and the dynamic conv; mmseg uses (Sync)BN).
    """

    def __init__(self, in_channels: int, channels: int, filter_size: int, fusion: bool = False,
                 norm: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        if filter_size < 1:
            raise ValueError(f"DynamicConvModule: filter_size must be >= 1, got {filter_size}")
        self.in_channels, self.channels, self.filter_size, self.fusion = in_channels, channels, filter_size, fusion
        kw = dict(device=device, dtype=dtype)
        self.filter_gen_conv = nn.Conv2d(in_channels, channels, 1, **kw)
        self.input_redu_conv = _ConvModule(in_channels, channels, norm, **kw)
        self.norm = nn.BatchNorm2d(channels, **kw) if norm else None
        self.activate = nn.ReLU(inplace=True)
        self.fusion_conv = _ConvModule(channels, channels, norm, **kw) if fusion else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.filter_gen_conv.reset_parameters()
        self.input_redu_conv.reset_parameters()
        if self.norm is not None:
            self.norm.reset_parameters()
        if self.fusion_conv is not None:
            self.fusion_conv.reset_parameters()

    def generate_filters(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> per-sample depthwise filters (B, channels, k, k)."""
        return self.filter_gen_conv(F.adaptive_avg_pool2d(x, self.filter_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(x, "B,C,H,W", "x", C=self.in_channels)
        filters = self.generate_filters(x)
        out = dynamic_depthwise_conv2d(self.input_redu_conv(x), filters)
        if self.norm is not None:
            out = self.norm(out)
        out = self.activate(out)
        if self.fusion_conv is not None:
            out = self.fusion_conv(out)
        return out

