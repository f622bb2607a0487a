"""Deformable position-sensitive RoI pooling (R-FCN + DCN).

Paper: Dai et al., "Deformable Convolutional Networks", ICCV 2017 (https://arxiv.org/abs/1703.06211),
Sec. 2.2 "Position-Sensitive (PS) RoI Pooling" and Fig. 4; the semantics are those of the authors' kernel,
msracver/Deformable-ConvNets@6aeda878a95bcb55eadffbe125804e730574de8d:
rfcn/operator_cxx/deformable_psroi_pooling.cu (``DeformablePSROIPoolForwardKernel``), which is not
RoIAlign. With G = ``group_size``, P = ``pooled_size`` (default G), S = ``sample_per_part``,
T = ``part_size`` (default P), D output channels and M offset classes:

- Shapes: input (N, D*G*G, H, W) score maps; rois (K, 5) rows (batch_index, x1, y1, x2, y2) in image
  pixels with (x2, y2) the last pixel inside the box (py-faster-rcnn's inclusive convention);
  offset (K, 2*M, T, T), channel 2m = dx and 2m + 1 = dy of offset class m, or None ("no_trans");
  output (K, D, P, P). M divides D; output channel d uses offset class d // (D / M) (the authors' cls
  branch has M = D, one offset field per class, the bbox branch M = 1).
- RoI: x1, y1, x2, y2 are rounded to whole pixels (C ``round``: halves away from zero), then
  start = round(x1) * spatial_scale - 0.5, end = (round(x2) + 1) * spatial_scale - 0.5, and
  w_r = max(end - start, 0.1) (likewise y, h_r).
- Bin (i, j) is w_r / P x h_r / P; its top-left corner is shifted by (trans_std * w_r * dx,
  trans_std * h_r * dy) with (dx, dy) = offset[k, 2m : 2m + 2, floor(i * T / P), floor(j * T / P)]:
  offsets are normalised by the RoI size (the paper's gamma = ``trans_std`` = 0.1).
- S x S samples at corner + (u / S) * bin size, u = 0..S-1, i.e. the top-left corners of the S x S
  sub-bins, not their centres (RoIAlign samples at (u + 0.5) / S).
- Border: a sample is used only if -0.5 <= x <= W - 0.5 and -0.5 <= y <= H - 0.5; a used sample is
  clamped to [0, W - 1] x [0, H - 1] and bilinearly interpolated. The output is the mean over the used
  samples (0 if none): samples outside are dropped from the average, not counted as zeros as in RoIAlign.
- Bin (i, j) of output channel d reads input channel (d*G + g_i)*G + g_j, g_i = min(floor(i*G / P), G-1),
  so with P = G this is torchvision's PS channel mapping.
- Gradients are autograd's through this forward. They equal the authors' backward kernel
  (``DeformablePSROIPoolBackwardAccKernel``) except at a sample with a whole-number coordinate, where
  the kernel's floor == ceil gives a zero offset gradient and autograd the one-sided derivative; RoIs get
  no gradient (they are rounded), as in the kernel.

With zero offsets and RoIs whose samples all lie inside the map, the result equals
``torchvision.ops.ps_roi_align`` (P = G, ``sampling_ratio`` = S) on the RoIs
(round(x1) - e, round(y1) - e', round(x2) + 1 - e, round(y2) + 1 - e') with the sub-bin half-shift
e = (round(x2) + 1 - round(x1)) / (2 P S) (likewise e'); tests/ops/test_deform_ps_roi_pool.py checks it.

:class:`DeformPSRoIPool` carries the authors' offset branch (``resnet_v1_101_rfcn_dcn.py``:
``rfcn_cls_offset_t`` / ``rfcn_bbox_offset_t`` and the ``no_trans`` pooling ``rfcn_cls_offset`` /
``rfcn_bbox_offset``): ``conv_offset``, a 1x1 conv from the features the score maps are computed from to
2*M*G*G channels, zero-initialised as their ``init_weight_rfcn``, is PS-pooled without offsets to
(K, 2*M, T, T) (group size G, T x T bins, S samples), and these are the offsets of the score maps' pooling.

Interpretation choices: the part index floor(i * T / P) is computed in integers (the kernel computes
(i / P) * T in float; the two agree for every P, T <= 14); C must be exactly D*G*G (the kernel reads
channels below D*G*G and checks nothing); bfloat16 / float16 are computed in float32 and cast back.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.errors import InputError
from zoo.ops._checks import check_floating, check_same, check_shape

__all__ = ["DeformPSRoIPool", "deform_ps_roi_pool", "deform_ps_roi_pool_reference"]


def _ps_args(input: Tensor, rois: Tensor, offset: Tensor | None, group_size: int, pooled_size: int | None,
             part_size: int | None, sample_per_part: int) -> tuple[int, int, int, int, int]:
    """Check a deformable PS RoI pooling call; returns (P, T, D, M, D / M) (metadata only, no host sync)."""
    _, c, _, _ = check_shape(input, "N,C,H,W", "input").values()
    check_floating(input, "input")
    if not isinstance(rois, Tensor) or rois.dim() != 2 or rois.shape[1] != 5:
        got = tuple(rois.shape) if isinstance(rois, Tensor) else type(rois).__name__
        raise InputError(f"rois must be a tensor of shape (K, 5) with rows (batch_index, x1, y1, x2, y2), got {got}")
    check_same(input, rois, "deform_ps_roi_pool input/rois")
    pooled = group_size if pooled_size is None else pooled_size
    part = pooled if part_size is None else part_size
    if min(group_size, pooled, part, sample_per_part) < 1:
        raise InputError(f"group_size, pooled_size, part_size and sample_per_part must be positive, got "
                         f"{group_size}, {pooled}, {part}, {sample_per_part}")
    gg = group_size * group_size
    if c % gg:
        raise InputError(f"input must have output_dim x group_size^2 = D x {gg} channels (group_size={group_size}), "
                         f"got {c}")
    out_dim = c // gg
    classes = 1
    if offset is not None:
        check_shape(offset, "K,2M,T,T_", "offset", K=rois.shape[0], T=part, T_=part)
        if offset.shape[1] % 2 or offset.shape[1] == 0 or out_dim % (offset.shape[1] // 2):
            raise InputError(f"offset must have shape (K, 2*M, T, T) with T = part_size = {part} and M offset "
                             f"classes dividing the {out_dim} output channels, got {tuple(offset.shape)}")
        check_same(input, offset, "deform_ps_roi_pool input/offset")
        classes = offset.shape[1] // 2
    return pooled, part, out_dim, classes, out_dim // classes


def _round_half_away(x: Tensor) -> Tensor:
    """C's ``round``: halves away from zero (``torch.round`` rounds them to even)."""
    whole = x.trunc()
    return torch.where((x - whole).abs() == 0.5, whole + x.sign(), torch.round(x))


def deform_ps_roi_pool(input: Tensor, rois: Tensor, offset: Tensor | None = None, group_size: int = 7,
                       pooled_size: int | None = None, part_size: int | None = None, sample_per_part: int = 4,
                       trans_std: float = 0.1, spatial_scale: float = 1.0) -> Tensor:
    """Deformable position-sensitive RoI pooling (fast path; the authors' kernel, see the module docstring).

    Args: input (N, D*G*G, H, W); rois (K, 5) = (batch_index, x1, y1, x2, y2), x2 / y2 inclusive;
    offset (K, 2*M, T, T) normalised (dx, dy) per part and offset class, or None; group_size G;
    pooled_size P (default G); part_size T (default P); sample_per_part S; trans_std the offset scale;
    spatial_scale maps roi coordinates to the input. Returns (K, D, P, P).

    All RoIs, offset classes and bins are sampled at once, one row of S samples per bin at a time, by
    ``F.grid_sample`` (``align_corners=True`` on coordinates clamped as the kernel's) on the score maps
    rearranged into one plane per (offset class, bin); no host sync, traceable. On 2 CPU cores the
    R-FCN cls pooling (K = 300, 81 classes with their own offsets, 7 x 7, S = 4, 38 x 63 maps) takes
    about 0.7 s, torchvision's plain ``ps_roi_pool`` of the same maps 0.2 s.
    """
    pooled, part, out_dim, classes, per_class = _ps_args(input, rois, offset, group_size, pooled_size, part_size,
                                                         sample_per_part)
    n, _, h, w = input.shape
    k, g, p, s = rois.shape[0], group_size, pooled, sample_per_part
    compute_dtype = torch.float32 if input.dtype in (torch.bfloat16, torch.float16) else input.dtype
    device = input.device
    # Laid out (offset class m, bin row i, bin column j, roi k): one plane of score maps per (m, i, j).
    rois = rois.to(compute_dtype)
    corner = _round_half_away(rois[:, 1:])
    start_x = corner[:, 0] * spatial_scale - 0.5
    start_y = corner[:, 1] * spatial_scale - 0.5
    roi_w = ((corner[:, 2] + 1) * spatial_scale - 0.5 - start_x).clamp(min=0.1)
    roi_h = ((corner[:, 3] + 1) * spatial_scale - 0.5 - start_y).clamp(min=0.1)
    bins = torch.arange(p, dtype=compute_dtype, device=device)
    x0 = start_x + bins.view(1, 1, p, 1) * (roi_w / p)                   # bin corners (M or 1, P, P, K)
    y0 = start_y + bins.view(1, p, 1, 1) * (roi_h / p)
    if offset is not None:
        parts = torch.arange(p, device=device) * part // p
        trans = offset.to(compute_dtype).view(k, classes, 2, part, part)[:, :, :, parts][..., parts]
        trans = trans.permute(2, 1, 3, 4, 0)                              # (2, M, P, P, K)
        x0 = x0 + trans_std * trans[0] * roi_w
        y0 = y0 + trans_std * trans[1] * roi_h
    x0, y0 = x0.expand(classes, p, p, k).unsqueeze(-1), y0.expand(classes, p, p, k).unsqueeze(-1)

    # Score-map planes (M*P*P, D/M, H, N*W): plane (m, i, j) holds the maps of the channels
    # (m*D/M + q)*G*G + g_i*G + g_j of every image side by side, so one grid_sample serves the whole batch:
    # a RoI of image b samples x + b*W after clamping x to [0, W - 1], which never mixes two images.
    planes = input.to(compute_dtype).reshape(n, classes, per_class, g * g, h, w).permute(1, 3, 2, 4, 0, 5)
    planes = planes.reshape(classes, g * g, per_class, h, n * w)
    if p != g:
        groups = (torch.arange(p, device=device) * g // p).clamp(max=g - 1)
        planes = planes[:, (groups.view(-1, 1) * g + groups.view(1, -1)).flatten()]
    planes = planes.reshape(classes * p * p, per_class, h, n * w)
    image_x = (rois[:, 0].long() * w).to(compute_dtype).view(-1, 1)      # (K, 1)
    scale_x = 2.0 / (n * w - 1) if n * w > 1 else 0.0
    scale_y = 2.0 / (h - 1) if h > 1 else 0.0
    columns = torch.arange(s, dtype=compute_dtype, device=device) * (roi_w.view(-1, 1) / (p * s))  # (K, S)

    total = count = None
    for u in range(s):  # one row of S samples per bin at a time (bounds the grid's memory)
        y = (y0 + u * (roi_h.view(-1, 1) / (p * s))).expand(classes, p, p, k, s)
        x = x0 + columns                                                  # (M, P, P, K, S)
        used = ((x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5)).to(compute_dtype)
        gx = (x.clamp(0, w - 1) + image_x) * scale_x - 1 if scale_x else torch.zeros_like(x)
        gy = y.clamp(0, h - 1) * scale_y - 1 if scale_y else torch.zeros_like(y)
        grid = torch.stack([gx, gy], dim=-1).reshape(classes * p * p, k, s, 2)
        sampled = F.grid_sample(planes, grid, mode="bilinear", padding_mode="border", align_corners=True)
        used = used.reshape(classes * p * p, 1, k, s)
        row = (sampled * used).sum(-1)                                    # (M*P*P, D/M, K)
        total = row if total is None else total + row
        count = used.sum(-1) if count is None else count + used.sum(-1)
    out = total / count.clamp(min=1)                                      # no used sample: 0
    return out.view(classes, p, p, per_class, k).permute(4, 0, 3, 1, 2).reshape(k, out_dim, p, p).to(input.dtype)


def deform_ps_roi_pool_reference(input: Tensor, rois: Tensor, offset: Tensor | None = None, group_size: int = 7,
                                 pooled_size: int | None = None, part_size: int | None = None,
                                 sample_per_part: int = 4, trans_std: float = 0.1,
                                 spatial_scale: float = 1.0) -> Tensor:
    """Plain-loop deformable PS RoI pooling (one RoI, channel, bin and sample at a time), kept as the test
    oracle; differentiable in input and offset. Same arguments and result as :func:`deform_ps_roi_pool`."""
    pooled, part, out_dim, _, per_class = _ps_args(input, rois, offset, group_size, pooled_size, part_size,
                                                   sample_per_part)
    _, _, h, w = input.shape
    g, p, s = group_size, pooled, sample_per_part
    out = input.new_zeros(rois.shape[0], out_dim, p, p)

    def c_round(v: float) -> float:  # halves away from zero
        return math.copysign(math.floor(abs(v) + 0.5), v) if abs(v) % 1 == 0.5 else float(round(v))

    def bilinear(plane: Tensor, y: Tensor | float, x: Tensor | float) -> Tensor:  # plane (H, W), y, x clamped
        y_lo, x_lo = math.floor(float(y)), math.floor(float(x))
        y_hi, x_hi = math.ceil(float(y)), math.ceil(float(x))
        ly, lx = y - y_lo, x - x_lo
        return ((1 - ly) * (1 - lx) * plane[y_lo, x_lo] + (1 - ly) * lx * plane[y_lo, x_hi]
                + ly * (1 - lx) * plane[y_hi, x_lo] + ly * lx * plane[y_hi, x_hi])

    for r, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        start_x, start_y = c_round(x1) * spatial_scale - 0.5, c_round(y1) * spatial_scale - 0.5
        roi_w = max((c_round(x2) + 1) * spatial_scale - 0.5 - start_x, 0.1)
        roi_h = max((c_round(y2) + 1) * spatial_scale - 0.5 - start_y, 0.1)
        bin_w, bin_h = roi_w / p, roi_h / p
        for d in range(out_dim):
            m = d // per_class  # offset class
            for i in range(p):
                for j in range(p):
                    corner_x: Tensor | float = start_x + j * bin_w
                    corner_y: Tensor | float = start_y + i * bin_h
                    if offset is not None:
                        corner_x = corner_x + trans_std * offset[r, 2 * m, i * part // p, j * part // p] * roi_w
                        corner_y = corner_y + trans_std * offset[r, 2 * m + 1, i * part // p, j * part // p] * roi_h
                    gi, gj = min(i * g // p, g - 1), min(j * g // p, g - 1)
                    plane = input[int(b), (d * g + gi) * g + gj]
                    total, used = input.new_zeros(()), 0
                    for u in range(s):
                        for v in range(s):
                            y = corner_y + u * bin_h / s
                            x = corner_x + v * bin_w / s
                            if not (-0.5 <= float(x) <= w - 0.5 and -0.5 <= float(y) <= h - 0.5):
                                continue  # outside: not part of the average
                            y = y.clamp(0, h - 1) if isinstance(y, Tensor) else min(max(y, 0.0), h - 1.0)
                            x = x.clamp(0, w - 1) if isinstance(x, Tensor) else min(max(x, 0.0), w - 1.0)
                            total = total + bilinear(plane, y, x)
                            used += 1
                    out[r, d, i, j] = total / used if used else 0.0
    return out


class DeformPSRoIPool(nn.Module):
    """Deformable PS RoI pooling with the authors' offset branch (R-FCN + DCN, see the module docstring).

    ``forward(input, rois, features)``: score maps input (N, D*G*G, H, W) with D = ``output_dim``, rois
    (K, 5) and the features (N, ``in_channels``, H, W) the score maps were computed from ->
    (K, D, P, P). ``conv_offset`` (1x1, ``in_channels`` -> 2*M*G*G, M = ``offset_classes``,
    zero-initialised, so a fresh module pools without offsets) is PS-pooled without offsets to the
    (K, 2*M, T, T) offsets of the score maps' pooling.
    """

    def __init__(self, in_channels: int, output_dim: int, group_size: int = 7, pooled_size: int | None = None,
                 part_size: int | None = None, sample_per_part: int = 4, trans_std: float = 0.1,
                 spatial_scale: float = 1.0, offset_classes: int = 1, *,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if offset_classes < 1 or output_dim % offset_classes:
            raise InputError(f"offset_classes={offset_classes} must divide output_dim={output_dim}")
        self.in_channels, self.output_dim, self.group_size = in_channels, output_dim, group_size
        self.pooled_size = group_size if pooled_size is None else pooled_size
        self.part_size = self.pooled_size if part_size is None else part_size
        self.sample_per_part, self.trans_std = sample_per_part, float(trans_std)
        self.spatial_scale, self.offset_classes = float(spatial_scale), offset_classes
        self.conv_offset = nn.Conv2d(in_channels, 2 * offset_classes * group_size * group_size, 1,
                                     device=device, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def offsets(self, features: Tensor, rois: Tensor) -> Tensor:
        """(K, 2*M, T, T): ``conv_offset(features)`` PS-pooled without offsets to T x T bins."""
        check_shape(features, "N,C,H,W", "features", C=self.in_channels)
        return deform_ps_roi_pool(self.conv_offset(features), rois, None, self.group_size, self.part_size, None,
                                  self.sample_per_part, self.trans_std, self.spatial_scale)

    def forward(self, input: Tensor, rois: Tensor, features: Tensor) -> Tensor:
        gg = self.group_size * self.group_size
        check_shape(input, "N,C,H,W", "input", C=self.output_dim * gg)
        return deform_ps_roi_pool(input, rois, self.offsets(features, rois), self.group_size, self.pooled_size,
                                  self.part_size, self.sample_per_part, self.trans_std, self.spatial_scale)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, output_dim={self.output_dim}, group_size={self.group_size}, "
                f"pooled_size={self.pooled_size}, part_size={self.part_size}, "
                f"sample_per_part={self.sample_per_part}, trans_std={self.trans_std}, "
                f"spatial_scale={self.spatial_scale}, offset_classes={self.offset_classes}")
