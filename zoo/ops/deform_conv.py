"""Deformable convolution v1 and modulated deformable convolution v2.

Papers: Dai et al., "Deformable Convolutional Networks", ICCV 2017 (https://arxiv.org/abs/1703.06211);
Zhu et al., "Deformable ConvNets v2: More Deformable, Better Results", CVPR 2019
(https://arxiv.org/abs/1811.11168).

What it computes: for every output position p0 and kernel tap pk (k = i * kw + j),

    y(p0) = sum_k w_k * m_k(p0) * x(p0 * stride - padding + pk * dilation + dp_k(p0)) + b

where x(.) at a fractional position is bilinear interpolation with zero padding (corners outside the
map contribute 0), dp_k are learned offsets (v1, m_k = 1) and m_k in [0, 1] learned modulation
scalars (v2). The input channels are split into ``deform_groups`` consecutive blocks, each with its own
offset (and mask) field; ``groups`` splits the weight as in ``nn.Conv2d``.

Shapes (G = deform_groups, kh x kw kernel, Ho x Wo the usual convolution output size):
    input (B, C_in, H, W); weight (C_out, C_in / groups, kh, kw); bias (C_out,)
    offset (B, 2 * G * kh * kw, Ho, Wo), channel g * 2*kh*kw + 2*k + {0: dy, 1: dx}
    mask   (B, G * kh * kw, Ho, Wo),     channel g * kh*kw + k
    output (B, C_out, Ho, Wo)
This is the layout of torchvision.ops.deform_conv2d and of mmcv's kernels.

Modules: ``DeformConv2d`` (v1) and ``ModulatedDeformConv2d`` (v2) carry their offset predictor
``conv_offset`` (a plain conv with the main conv's kernel, stride, padding and dilation, zero-initialised
weight and bias) so that they drop in where a 3x3 conv sits. Attribute names and initialisation follow
mmcv's ``DeformConv2dPack`` / ``ModulatedDeformConv2dPack`` (mmcv/ops/deform_conv.py,
mmcv/ops/modulated_deform_conv.py), so mmdet "dconv"/"mdconv" checkpoints load unchanged: keys
``weight``, [``bias``], ``conv_offset.weight``, ``conv_offset.bias``.

Interpretation choices:
- v2 offset head: the 3*G*kh*kw outputs are chunked into (o1, o2, mask logits) along channels,
  offset = cat(o1, o2), mask = sigmoid(logits) (mmcv's order; at zero init every mask is 0.5).
- Defaults follow mmcv: v1 has no bias by default, v2 has one; v1 weight is Kaiming-uniform (ReLU gain),
  v2 weight uniform(+-1/sqrt(C_in*kh*kw)) with zero bias.
- bfloat16 (both paths) and float16 (sample + matmul path) are computed in float32 and the result is
  cast back (gradients flow through the casts): torchvision's kernel has no bfloat16 path, and sample
  positions in half precision would be off by a fraction of a pixel.

Fast path, per device (:func:`deform_conv2d_implementation`, measurements there): torchvision's kernel
on CUDA; elsewhere, and under torch.export, every tap sampled with one ``F.grid_sample`` into columns and
one matmul with the weight (:func:`_deform_conv2d_sample_matmul`), which beats torchvision's CPU kernel.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair
from torchvision.ops import deform_conv2d as _tv_deform_conv2d

from zoo.errors import InputError
from zoo.ops._checks import check_floating, check_same, check_shape

__all__ = [
    "DeformConv2d",
    "ModulatedDeformConv2d",
    "deform_conv2d",
    "deform_conv2d_reference",
    "deform_conv2d_implementation",
    "modulated_deform_conv2d",
]

IntPair = int | tuple[int, int]


def _output_hw(h: int, w: int, k: tuple[int, int], s: tuple[int, int], p: tuple[int, int],
               d: tuple[int, int]) -> tuple[int, int]:
    ho = (h + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1
    wo = (w + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1
    return ho, wo


def _check_args(input: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None, mask: Tensor | None,
                stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int]) -> None:
    """Validate shapes/dtypes of a deformable convolution call (metadata only, no host sync)."""
    b, c_in, h, w = check_shape(input, "B,C_in,H,W", "input").values()
    check_floating(input, "input")
    c_out, c_per_group, kh, kw = check_shape(weight, "C_out,C_in_per_group,kh,kw", "weight").values()
    check_same(input, weight, "deform_conv2d input/weight")
    if c_per_group == 0 or c_in % c_per_group != 0:
        raise InputError(f"weight has {c_per_group} input channels per group, which does not divide "
                         f"the input's C_in={c_in}; weight must be (C_out, C_in / groups, kh, kw)")
    groups = c_in // c_per_group
    if c_out % groups != 0:
        raise InputError(f"weight C_out={c_out} is not divisible by groups={groups} (= C_in / weight.shape[1])")
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise InputError(f"stride and dilation must be >= 1 and padding >= 0, got stride={stride}, "
                         f"dilation={dilation}, padding={padding}")
    ho, wo = _output_hw(h, w, (kh, kw), stride, padding, dilation)
    if ho < 1 or wo < 1:
        raise InputError(f"input of spatial size {h}x{w} is too small for kernel {kh}x{kw} with "
                         f"padding={padding}, dilation={dilation}: output would be {ho}x{wo}")
    taps = kh * kw
    ob, oc, oh, ow = check_shape(offset, "B,2*G*kh*kw,Ho,Wo", "offset").values()
    check_same(input, offset, "deform_conv2d input/offset")
    if oc == 0 or oc % (2 * taps) != 0:
        raise InputError(f"offset must have 2 * deform_groups * kh * kw channels (a multiple of "
                         f"{2 * taps} for a {kh}x{kw} kernel), got {oc}")
    dg = oc // (2 * taps)
    if c_in % dg != 0:
        raise InputError(f"input C_in={c_in} is not divisible by deform_groups={dg} (offset has {oc} channels)")
    if (ob, oh, ow) != (b, ho, wo):
        raise InputError(f"offset must have shape (B={b}, {oc}, Ho={ho}, Wo={wo}) to match the output, "
                         f"got {tuple(offset.shape)}")
    if mask is not None:
        check_same(input, mask, "deform_conv2d input/mask")
        check_shape(mask, "B,G*kh*kw,Ho,Wo", "mask", B=b, **{"G*kh*kw": dg * taps}, Ho=ho, Wo=wo)
    if bias is not None:
        check_shape(bias, "C_out", "bias", C_out=c_out)
        check_same(input, bias, "deform_conv2d input/bias")


def deform_conv2d_implementation(device: torch.device, dtype: torch.dtype) -> str:
    """Which implementation :func:`deform_conv2d` / :func:`modulated_deform_conv2d` run for inputs on
    ``device`` with ``dtype``: ``"torchvision"`` (torchvision.ops.deform_conv2d) or ``"sample_matmul"``
    (:func:`_deform_conv2d_sample_matmul`: ``F.grid_sample`` of every tap, then one matmul).

    A pure function of the device type (and of whether torch.export is tracing): no timing, no host
    sync. Rule and measurement:

    - CUDA: torchvision's kernel (fused im2col on the GPU; the fast path there).
    - every other device (CPU, meta, ...) and any device under torch.export: sample + matmul. On
      this project's CPU (2-core AMD EPYC, torch 2.14.1, torchvision 0.29.1) at the res5 setting
      (1x512x32x32 -> 512, 3x3, dilation 2, one deformable group, with a mask) sample + matmul is
      1.93x faster than torchvision's CPU kernel (62 vs 120 ms) and 2.69x for a forward + backward
      step (268 vs 719 ms): ``python benchmarks/ops.py --only deform --threads 1 --clock cpu``,
      2026-12-06, one thread, CPU time, on a loaded machine. At other shapes 1.7-3.9x (``python
      benchmarks/dispatch_crossover.py --family deform``). Under export it traces to aten ops only
      (grid_sampler, matmul; the ONNX export is a GridSample node that onnxruntime runs), where
      torchvision's op would be a custom op.
    The dtype does not change the choice (reduced-precision inputs are computed in float32 on either
    path; see the module docstring).
    """
    if device.type == "cuda" and not torch.compiler.is_exporting():
        return "torchvision"
    return "sample_matmul"


def _deform_conv2d(input: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None,
                   mask: Tensor | None, stride: tuple[int, int], padding: tuple[int, int],
                   dilation: tuple[int, int]) -> Tensor:
    """Checked arguments -> the implementation :func:`deform_conv2d_implementation` picks. Computed in
    float32 and cast back: bfloat16 on torchvision (no bfloat16 kernel), bfloat16 and float16 on
    sample + matmul (sample positions in half precision would be off by up to 1/8 pixel at 32)."""
    tv = deform_conv2d_implementation(input.device, input.dtype) == "torchvision"
    if input.dtype == torch.bfloat16 or (input.dtype == torch.float16 and not tv):
        f32 = lambda t: None if t is None else t.float()  # noqa: E731
        out = _deform_conv2d(input.float(), offset.float(), weight.float(), f32(bias), f32(mask), stride,
                             padding, dilation)
        return out.to(input.dtype)
    if tv:
        return _tv_deform_conv2d(input, offset, weight, bias, stride, padding, dilation, mask)
    return _deform_conv2d_sample_matmul(input, offset, weight, bias, mask, stride, padding, dilation)


def _deform_conv2d_sample_matmul(input: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None,
                                 mask: Tensor | None, stride: tuple[int, int], padding: tuple[int, int],
                                 dilation: tuple[int, int]) -> Tensor:
    """Deformable convolution as one ``F.grid_sample`` of all kh*kw taps (bilinear, zero padding)
    into columns (B, C_in*kh*kw, Ho*Wo), times the mask, then one (grouped) matmul with the weight.

    Equal to torchvision's kernel: a corner outside the map contributes 0, so a sample at least one
    pixel outside is 0. Sample positions are mapped to grid_sample's align_corners=False
    coordinates, ``(2 * pos + 1) / size - 1``, which is defined for any size >= 1. Memory: the
    columns, C_in*kh*kw*Ho*Wo per sample (as torchvision's im2col buffer). No checks.
    """
    b, c_in, h, w = input.shape
    c_out, c_per_group = weight.shape[:2]
    pos_y, pos_x = _sampling_positions(offset, weight, stride, padding, dilation)  # (B, G, taps, Ho, Wo)
    dg, taps, ho, wo = pos_y.shape[1:]
    groups = c_in // c_per_group
    grid = torch.stack(((2 * pos_x + 1) / w - 1, (2 * pos_y + 1) / h - 1), dim=-1)  # (B, G, taps, Ho, Wo, 2)
    sampled = F.grid_sample(input.reshape(b * dg, c_in // dg, h, w), grid.view(b * dg, taps * ho, wo, 2),
                            mode="bilinear", padding_mode="zeros", align_corners=False)
    if mask is not None:                                                            # (B*G, C/G, taps*Ho, Wo)
        sampled, mask = sampled.view(b, dg, c_in // dg, taps, ho * wo), mask.view(b, dg, 1, taps, ho * wo)
        # in place unless the mask's gradient needs the samples (grid_sample's backward does not)
        sampled = sampled * mask if torch.is_grad_enabled() and mask.requires_grad else sampled.mul_(mask)
    columns = sampled.reshape(b, groups, c_per_group * taps, ho * wo)               # channel-major, tap-minor
    out = torch.matmul(weight.reshape(groups, c_out // groups, c_per_group * taps), columns)
    out = out.view(b, c_out, ho, wo)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def _sampling_positions(offset: Tensor, weight: Tensor, stride: tuple[int, int], padding: tuple[int, int],
                        dilation: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Rows and columns (B, G, taps, Ho, Wo) at which every tap k = i * kw + j samples the input:
    the regular grid (oy * s - p + i * d, ox * s - p + j * d) plus the offsets (dy, dx)."""
    b, (ho, wo), (kh, kw) = offset.shape[0], offset.shape[-2:], weight.shape[-2:]
    dtype, device = offset.dtype, offset.device
    oy = torch.arange(ho, dtype=dtype, device=device) * stride[0] - padding[0]
    ox = torch.arange(wo, dtype=dtype, device=device) * stride[1] - padding[1]
    ki = torch.arange(kh, dtype=dtype, device=device).repeat_interleave(kw) * dilation[0]   # (taps,)
    kj = torch.arange(kw, dtype=dtype, device=device).repeat(kh) * dilation[1]
    off = offset.view(b, offset.shape[1] // (2 * kh * kw), kh * kw, 2, ho, wo)  # explicit G: B may be 0
    return (ki[:, None, None] + oy[None, :, None] + off[:, :, :, 0],
            kj[:, None, None] + ox[None, None, :] + off[:, :, :, 1])


def deform_conv2d(input: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None = None,
                  stride: IntPair = 1, padding: IntPair = 0, dilation: IntPair = 1) -> Tensor:
    """Deformable convolution v1 (fast path per device: :func:`deform_conv2d_implementation`).

    Args: input (B, C_in, H, W); offset (B, 2*G*kh*kw, Ho, Wo) with (dy, dx) pairs per tap; weight
    (C_out, C_in/groups, kh, kw); bias (C_out,) or None. ``groups`` and ``deform_groups`` G are read
    from the weight and offset shapes. Returns (B, C_out, Ho, Wo).
    """
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    _check_args(input, offset, weight, bias, None, stride, padding, dilation)
    return _deform_conv2d(input, offset, weight, bias, None, stride, padding, dilation)


def modulated_deform_conv2d(input: Tensor, offset: Tensor, mask: Tensor, weight: Tensor,
                            bias: Tensor | None = None, stride: IntPair = 1, padding: IntPair = 0,
                            dilation: IntPair = 1) -> Tensor:
    """Modulated deformable convolution v2 (fast path per device: :func:`deform_conv2d_implementation`).

    As :func:`deform_conv2d`, plus mask (B, G*kh*kw, Ho, Wo): each bilinear sample is multiplied by
    its mask value before the weighted sum (the mask is used as given; modules apply the sigmoid).
    """
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    _check_args(input, offset, weight, bias, mask, stride, padding, dilation)
    return _deform_conv2d(input, offset, weight, bias, mask, stride, padding, dilation)


def _bilinear_zero_padded(x: Tensor, y: Tensor, xs: Tensor) -> Tensor:
    """Sample x (B, G, Cg, H, W) at fractional rows y / columns xs of shape (B, G, P); corners that fall
    outside the map count as 0. Returns (B, G, Cg, P)."""
    h, w = x.shape[-2:]
    flat = x.flatten(-2)                                   # (B, G, Cg, H*W)
    y0, x0 = y.floor(), xs.floor()
    out = x.new_zeros(*x.shape[:3], y.shape[-1])
    for cy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for cx, wx in ((x0, 1 - (xs - x0)), (x0 + 1, xs - x0)):
            inside = (cy >= 0) & (cy <= h - 1) & (cx >= 0) & (cx <= w - 1)
            index = (cy.clamp(0, h - 1) * w + cx.clamp(0, w - 1)).long()
            corner = flat.gather(-1, index.unsqueeze(2).expand(-1, -1, flat.shape[2], -1))
            out = out + corner * (wy * wx * inside).unsqueeze(2)
    return out


def deform_conv2d_reference(input: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None = None,
                            stride: IntPair = 1, padding: IntPair = 0, dilation: IntPair = 1,
                            mask: Tensor | None = None) -> Tensor:
    """Plain deformable convolution (v1, or v2 when ``mask`` is given), kept as the test oracle.

    Builds the sampling positions p0 * stride - padding + pk * dilation + dp_k, bilinearly samples every
    tap (zero padding) into columns (B, C_in * kh * kw, Ho * Wo), multiplies by the mask, then applies
    the weight as one grouped matmul. Same arguments and shapes as :func:`modulated_deform_conv2d`.
    """
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    _check_args(input, offset, weight, bias, mask, stride, padding, dilation)
    b, c_in, h, w = input.shape
    c_out, c_per_group, kh, kw = weight.shape
    groups, taps = c_in // c_per_group, kh * kw
    dg = offset.shape[1] // (2 * taps)
    ho, wo = offset.shape[-2:]

    pos_y, pos_x = _sampling_positions(offset, weight, stride, padding, dilation)
    sampled = _bilinear_zero_padded(input.view(b, dg, c_in // dg, h, w), pos_y.flatten(2), pos_x.flatten(2))
    sampled = sampled.view(b, dg, c_in // dg, taps, ho * wo)
    if mask is not None:
        sampled = sampled * mask.view(b, dg, 1, taps, ho * wo)

    columns = sampled.reshape(b, groups, c_per_group * taps, ho * wo)       # channel-major, tap-minor
    kernel = weight.reshape(groups, c_out // groups, c_per_group * taps)
    out = torch.einsum("gok,bgkl->bgol", kernel, columns).reshape(b, c_out, ho, wo)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


class _DeformConvBase(nn.Module):
    _offset_parts = 2  # offset channels per tap and deformable group: 2 (dy, dx) or 3 (+ mask)

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, stride: IntPair = 1,
                 padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1, deform_groups: int = 1,
                 bias: bool = False, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise InputError(f"in_channels={in_channels} and out_channels={out_channels} must be "
                             f"divisible by groups={groups}")
        if in_channels % deform_groups:
            raise InputError(f"in_channels={in_channels} must be divisible by deform_groups={deform_groups}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        self.groups, self.deform_groups = groups, deform_groups
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.conv_offset = nn.Conv2d(
            in_channels, deform_groups * self._offset_parts * self.kernel_size[0] * self.kernel_size[1],
            self.kernel_size, self.stride, self.padding, self.dilation, bias=True, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
                f"deform_groups={self.deform_groups}, bias={self.bias is not None}")


class DeformConv2d(_DeformConvBase):
    """Deformable convolution v1 with its own offset predictor (mmcv ``DeformConv2dPack``).

    Arguments as ``nn.Conv2d`` plus ``deform_groups`` (offset fields, each shared by C_in/deform_groups
    consecutive channels). ``conv_offset`` predicts 2*deform_groups*kh*kw offsets from the input and is
    zero-initialised, so a fresh module equals a plain convolution. Input (B, C_in, H, W) -> output
    (B, C_out, Ho, Wo). Defaults as mmcv: ``bias=False``, Kaiming-uniform weight.
    """

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        super().reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        check_shape(x, "B,C,H,W", "input", C=self.in_channels)
        return deform_conv2d(x, self.conv_offset(x), self.weight, self.bias, self.stride, self.padding,
                             self.dilation)


class ModulatedDeformConv2d(_DeformConvBase):
    """Modulated deformable convolution v2 with its offset/mask predictor (mmcv ``ModulatedDeformConv2dPack``).

    ``conv_offset`` predicts 3*deform_groups*kh*kw channels, chunked into (o1, o2, m): offset =
    cat(o1, o2), mask = sigmoid(m). Zero-initialised, so a fresh module is a plain convolution scaled by
    0.5 (plus bias). Input (B, C_in, H, W) -> output (B, C_out, Ho, Wo). Defaults as mmcv: ``bias=True``,
    weight uniform(+-1/sqrt(C_in*kh*kw)), zero bias.
    """

    _offset_parts = 3

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, stride: IntPair = 1,
                 padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1, deform_groups: int = 1,
                 bias: bool = True, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         deform_groups, bias, device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        super().reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        check_shape(x, "B,C,H,W", "input", C=self.in_channels)
        o1, o2, logits = torch.chunk(self.conv_offset(x), 3, dim=1)
        return modulated_deform_conv2d(x, torch.cat((o1, o2), dim=1), torch.sigmoid(logits), self.weight,
                                       self.bias, self.stride, self.padding, self.dilation)
