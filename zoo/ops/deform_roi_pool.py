"""Deformable RoI pooling (v1) and modulated deformable RoI pooling (v2); position-sensitive RoI pooling.

Papers: Dai et al., "Deformable Convolutional Networks", ICCV 2017 (https://arxiv.org/abs/1703.06211),
Sec. 2.2; Zhu et al., "Deformable ConvNets v2", CVPR 2019 (https://arxiv.org/abs/1811.11168), Sec. 3.

What it computes: aligned RoIAlign (pixel centres at +0.5, no rounding, no minimum RoI size) in which
bin (i, j) of RoI r is shifted by (gamma * w_r * dx[r, i, j], gamma * h_r * dy[r, i, j]) before it is
averaged over a sampling grid of bilinear samples; w_r, h_r are the RoI's width and height on the
feature map. Offsets are normalised by the RoI size so they are scale-invariant; gamma = 0.1 as in the
paper. With zero offsets this is exactly ``torchvision.ops.roi_align(..., aligned=True)``. The modules
predict the offsets from the un-deformed pooled features with fc(ph*pw*C -> 1024)-ReLU-fc(1024 -> 1024)-
ReLU-fc(1024 -> 2*ph*pw) (last layer zero-initialised); v2 adds fc(ph*pw*C -> 1024)-ReLU-fc(1024 ->
ph*pw)-sigmoid, a per-bin mask that multiplies the pooled bins.

Shapes: input (N, C, H, W); rois (K, 5) rows (batch_index, x1, y1, x2, y2) in input-image coordinates
(multiplied by ``spatial_scale``), as torchvision; offset (K, 2, ph, pw) with channel 0 = dx, 1 = dy
(mmcv's layout); output (K, C, ph, pw).

Interpretation choices (following mmcv's kernels, mmcv/ops/csrc/common/cuda/deform_roi_pool_cuda_kernel.cuh):
- Sampling grid per bin: ``sampling_ratio`` x ``sampling_ratio`` points when > 0; when <= 0 it is adaptive,
  ceil(h_r / ph) x ceil(w_r / pw) per RoI (mmcv's and torchvision's default). The adaptive grid needs the
  largest per-RoI grid size on the host (one device sync, not exportable); pass ``sampling_ratio > 0``
  for a sync-free, traceable call.
- Bilinear sampling uses RoIAlign's border rule: points more than one pixel outside the map give 0,
  points within one pixel are clamped to the border. Gradients are the exact derivatives of this forward
  (autograd), so offset gradients are zero where a sample is clamped.
- Key names follow mmcv's ``DeformRoIPoolPack`` / ``ModulatedDeformRoIPoolPack``
  (mmcv/ops/deform_roi_pool.py): ``offset_fc.{0,2,4}``, ``mask_fc.{0,2}``; mmdet "dpool"/"mdpool"
  checkpoints load unchanged. The mask's last fc is zero-initialised, so a fresh v2 module outputs
  0.5 * roi_align.
- bfloat16 / float16 inputs are sampled and averaged in float32 and the result is cast back.

Position-sensitive RoI pooling for R-FCN is torchvision's ``PSRoIPool`` / ``ps_roi_pool``, re-exported here;
its deformable form (R-FCN + DCN) is :mod:`zoo.ops.deform_ps_roi_pool`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair
from torchvision.ops import PSRoIPool, ps_roi_pool

from zoo.errors import InputError
from zoo.ops._checks import check_floating, check_same, check_shape

__all__ = [
    "DeformRoIPool",
    "ModulatedDeformRoIPool",
    "PSRoIPool",
    "deform_roi_pool",
    "deform_roi_pool_reference",
    "ps_roi_pool",
]

IntPair = int | tuple[int, int]


def _check_args(input: Tensor, rois: Tensor, offset: Tensor | None, output_size: tuple[int, int]) -> None:
    check_shape(input, "N,C,H,W", "input")
    check_floating(input, "input")
    if not isinstance(rois, Tensor) or rois.dim() != 2 or rois.shape[1] != 5:
        got = tuple(rois.shape) if isinstance(rois, Tensor) else type(rois).__name__
        raise InputError(f"rois must be a tensor of shape (K, 5) with rows (batch_index, x1, y1, x2, y2), got {got}")
    check_same(input, rois, "deform_roi_pool input/rois")
    if min(output_size) < 1:
        raise InputError(f"output_size must be positive, got {output_size}")
    if offset is not None:
        check_shape(offset, "K,2,ph,pw", "offset", K=rois.shape[0], **{"2": 2}, ph=output_size[0], pw=output_size[1])
        check_same(input, offset, "deform_roi_pool input/offset")


def _roi_geometry(rois: Tensor, offset: Tensor | None, output_size: tuple[int, int], spatial_scale: float,
                  gamma: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Per-bin top-left corners (K, ph, pw) after the offset shift, bin sizes and RoI sizes (K, 1, 1)."""
    ph, pw = output_size
    x1, y1, x2, y2 = (rois[:, i].view(-1, 1, 1) * spatial_scale - 0.5 for i in range(1, 5))
    roi_w, roi_h = x2 - x1, y2 - y1
    bin_w, bin_h = roi_w / pw, roi_h / ph
    j = torch.arange(pw, dtype=rois.dtype, device=rois.device).view(1, 1, pw)
    i = torch.arange(ph, dtype=rois.dtype, device=rois.device).view(1, ph, 1)
    start_x = x1 + j * bin_w
    start_y = y1 + i * bin_h
    if offset is not None:
        start_x = start_x + gamma * roi_w * offset[:, 0]
        start_y = start_y + gamma * roi_h * offset[:, 1]
    return start_x, start_y, bin_w, bin_h, roi_w, roi_h


def _bilinear_roialign(feat: Tensor, index_base: Tensor, y: Tensor, x: Tensor, h: int, w: int) -> Tensor:
    """RoIAlign bilinear sample. feat (N*H*W, C) channels-last; index_base, y, x (K, ph, pw) -> (K, ph, pw, C).

    The four corners are gathered in one indexing call and mixed with one batched (1 x 4) @ (4 x C) matmul.
    """
    valid = (y >= -1) & (y <= h) & (x >= -1) & (x <= w)
    y = y.clamp(0, h - 1)
    x = x.clamp(0, w - 1)
    y0, x0 = y.floor(), x.floor()
    y1, x1 = (y0 + 1).clamp(max=h - 1), (x0 + 1).clamp(max=w - 1)
    ly, lx = y - y0, x - x0
    hy, hx = 1 - ly, 1 - lx
    corners = torch.stack([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1], dim=-1).long()
    weights = torch.stack([hy * hx, hy * lx, ly * hx, ly * lx], dim=-1) * valid.unsqueeze(-1)
    values = feat[index_base.unsqueeze(-1) + corners]                   # (K, ph, pw, 4, C)
    return (weights.unsqueeze(-2) @ values).squeeze(-2)


def deform_roi_pool(input: Tensor, rois: Tensor, offset: Tensor | None = None, output_size: IntPair = 7,
                    spatial_scale: float = 1.0, sampling_ratio: int = 0, gamma: float = 0.1) -> Tensor:
    """Deformable RoI pooling (fast path: gathers for all RoIs and bins at once, one per grid point).

    Args: input (N, C, H, W); rois (K, 5) = (batch_index, x1, y1, x2, y2); offset (K, 2, ph, pw)
    normalised (dx, dy) per bin or None (plain aligned RoIAlign); output_size ph, pw; spatial_scale maps
    roi coordinates to the input; sampling_ratio points per bin side (<= 0: adaptive, needs a host
    sync); gamma the offset scale. Returns (K, C, ph, pw).
    """
    output_size = _pair(output_size)
    _check_args(input, rois, offset, output_size)
    n, c, h, w = input.shape
    k = rois.shape[0]
    ph, pw = output_size
    compute_dtype = torch.float32 if input.dtype in (torch.bfloat16, torch.float16) else input.dtype
    feat = input.to(compute_dtype).permute(0, 2, 3, 1).reshape(n * h * w, c)
    rois = rois.to(compute_dtype)
    start_x, start_y, bin_w, bin_h, roi_w, roi_h = _roi_geometry(
        rois, None if offset is None else offset.to(compute_dtype), output_size, spatial_scale, gamma)
    index_base = (rois[:, 0].long() * (h * w)).view(-1, 1, 1)

    if sampling_ratio > 0:
        grid_h = grid_w = sampling_ratio
        steps_h = steps_w = sampling_ratio
        count: Tensor | float = float(sampling_ratio * sampling_ratio)
    else:  # adaptive grid per RoI, as mmcv / torchvision
        if input.device.type == "meta":
            raise InputError("deform_roi_pool with sampling_ratio <= 0 (adaptive grid) needs the RoI values and "
                             "cannot run on the meta device; pass sampling_ratio > 0 (e.g. 2)")
        grid_h = torch.ceil(roi_h / ph).clamp(min=0)
        grid_w = torch.ceil(roi_w / pw).clamp(min=0)
        steps_h = int(grid_h.max()) if k else 0   # host sync: the loop length depends on the data
        steps_w = int(grid_w.max()) if k else 0
        count = (grid_h * grid_w).clamp(min=1).unsqueeze(-1)
        grid_h, grid_w = grid_h.clamp(min=1), grid_w.clamp(min=1)

    total = feat.new_zeros(k, ph, pw, c)
    for iy in range(steps_h):
        y = start_y + (iy + 0.5) * bin_h / grid_h
        for ix in range(steps_w):
            x = start_x + (ix + 0.5) * bin_w / grid_w
            sample = _bilinear_roialign(feat, index_base, y, x, h, w)
            if sampling_ratio <= 0:  # drop grid points beyond this RoI's own grid size
                sample = torch.where(((iy < grid_h) & (ix < grid_w)).unsqueeze(-1), sample, 0.0)
            total = total + sample
    return (total / count).permute(0, 3, 1, 2).to(input.dtype)


def deform_roi_pool_reference(input: Tensor, rois: Tensor, offset: Tensor | None = None,
                              output_size: IntPair = 7, spatial_scale: float = 1.0, sampling_ratio: int = 0,
                              gamma: float = 0.1) -> Tensor:
    """Plain-loop deformable RoI pooling (one RoI, bin and sample point at a time), kept as the test oracle.

    Same arguments and result as :func:`deform_roi_pool`.
    """
    ph, pw = _pair(output_size)
    _check_args(input, rois, offset, (ph, pw))
    _, c, h, w = input.shape
    out = input.new_zeros(rois.shape[0], c, ph, pw)

    def bilinear(img: Tensor, y: float, x: float) -> Tensor:  # img (C, H, W) -> (C,)
        if y < -1.0 or y > h or x < -1.0 or x > w:
            return img.new_zeros(c)
        y, x = min(max(y, 0.0), h - 1.0), min(max(x, 0.0), w - 1.0)
        y_lo, x_lo = int(math.floor(y)), int(math.floor(x))
        y_hi, x_hi = min(y_lo + 1, h - 1), min(x_lo + 1, w - 1)
        ly, lx = y - y_lo, x - x_lo
        return ((1 - ly) * (1 - lx) * img[:, y_lo, x_lo] + (1 - ly) * lx * img[:, y_lo, x_hi]
                + ly * (1 - lx) * img[:, y_hi, x_lo] + ly * lx * img[:, y_hi, x_hi])

    for r, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        img = input[int(b)]
        x1, y1, x2, y2 = (v * spatial_scale - 0.5 for v in (x1, y1, x2, y2))
        roi_w, roi_h = x2 - x1, y2 - y1
        bin_w, bin_h = roi_w / pw, roi_h / ph
        gh = sampling_ratio if sampling_ratio > 0 else max(math.ceil(roi_h / ph), 0)
        gw = sampling_ratio if sampling_ratio > 0 else max(math.ceil(roi_w / pw), 0)
        for i in range(ph):
            for j in range(pw):
                sx, sy = x1 + j * bin_w, y1 + i * bin_h
                if offset is not None:
                    sx += gamma * roi_w * float(offset[r, 0, i, j])
                    sy += gamma * roi_h * float(offset[r, 1, i, j])
                acc = input.new_zeros(c)
                for iy in range(gh):
                    for ix in range(gw):
                        acc = acc + bilinear(img, sy + (iy + 0.5) * bin_h / gh, sx + (ix + 0.5) * bin_w / gw)
                out[r, :, i, j] = acc / max(gh * gw, 1)
    return out


class DeformRoIPool(nn.Module):
    """Deformable RoI pooling with its offset predictor (mmcv ``DeformRoIPoolPack``).

    Pools without offsets, predicts normalised (dx, dy) per bin with ``offset_fc`` (fc-ReLU-fc-ReLU-fc,
    last fc zero-initialised, so a fresh module is aligned RoIAlign), then pools again with the offsets.
    Input (N, C, H, W) with C = ``output_channels``, rois (K, 5) -> (K, C, ph, pw).
    """

    def __init__(self, output_size: IntPair, output_channels: int, deform_fc_channels: int = 1024,
                 spatial_scale: float = 1.0, sampling_ratio: int = 0, gamma: float = 0.1, *,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.output_size = _pair(output_size)
        self.output_channels, self.deform_fc_channels = output_channels, deform_fc_channels
        self.spatial_scale, self.sampling_ratio, self.gamma = float(spatial_scale), int(sampling_ratio), float(gamma)
        bins = self.output_size[0] * self.output_size[1]
        factory = {"device": device, "dtype": dtype}
        self.offset_fc = nn.Sequential(
            nn.Linear(bins * output_channels, deform_fc_channels, **factory), nn.ReLU(inplace=True),
            nn.Linear(deform_fc_channels, deform_fc_channels, **factory), nn.ReLU(inplace=True),
            nn.Linear(deform_fc_channels, bins * 2, **factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for layer in self.offset_fc:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
        nn.init.zeros_(self.offset_fc[-1].weight)
        nn.init.zeros_(self.offset_fc[-1].bias)

    def _pool(self, input: Tensor, rois: Tensor, offset: Tensor | None) -> Tensor:
        return deform_roi_pool(input, rois, offset, self.output_size, self.spatial_scale, self.sampling_ratio,
                               self.gamma)

    def _offsets(self, input: Tensor, rois: Tensor) -> tuple[Tensor, Tensor]:
        check_shape(input, "N,C,H,W", "input", C=self.output_channels)
        plain = self._pool(input, rois, None).flatten(1)            # (K, C*ph*pw), channel-major as mmcv
        return plain, self.offset_fc(plain).view(-1, 2, *self.output_size)

    def forward(self, input: Tensor, rois: Tensor) -> Tensor:
        _, offset = self._offsets(input, rois)
        return self._pool(input, rois, offset)

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, output_channels={self.output_channels}, "
                f"spatial_scale={self.spatial_scale}, sampling_ratio={self.sampling_ratio}, gamma={self.gamma}")


class ModulatedDeformRoIPool(DeformRoIPool):
    """Modulated deformable RoI pooling, DCNv2 (mmcv ``ModulatedDeformRoIPoolPack``).

    As :class:`DeformRoIPool`, plus ``mask_fc`` (fc-ReLU-fc-sigmoid, last fc zero-initialised) giving a
    per-bin mask in [0, 1] (K, 1, ph, pw) that multiplies the deformed pooled features.
    """

    def __init__(self, output_size: IntPair, output_channels: int, deform_fc_channels: int = 1024,
                 spatial_scale: float = 1.0, sampling_ratio: int = 0, gamma: float = 0.1, *,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(output_size, output_channels, deform_fc_channels, spatial_scale, sampling_ratio, gamma,
                         device=device, dtype=dtype)
        bins = self.output_size[0] * self.output_size[1]
        factory = {"device": device, "dtype": dtype}
        self.mask_fc = nn.Sequential(
            nn.Linear(bins * output_channels, deform_fc_channels, **factory), nn.ReLU(inplace=True),
            nn.Linear(deform_fc_channels, bins, **factory), nn.Sigmoid())
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if not hasattr(self, "mask_fc"):  # called from DeformRoIPool.__init__ before mask_fc exists
            return
        for layer in self.mask_fc:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
        nn.init.zeros_(self.mask_fc[2].weight)
        nn.init.zeros_(self.mask_fc[2].bias)

    def forward(self, input: Tensor, rois: Tensor) -> Tensor:
        plain, offset = self._offsets(input, rois)
        mask = self.mask_fc(plain).view(-1, 1, *self.output_size)
        return self._pool(input, rois, offset) * mask
