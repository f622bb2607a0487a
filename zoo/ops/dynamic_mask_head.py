"""CondInst dynamic mask head (Tian, Shen, Chen; ECCV 2020).

Paper: "Conditional Convolutions for Instance Segmentation", https://arxiv.org/abs/2003.05664.
Reference code: aim-uofa/AdelaiDet ``adet/modeling/condinst/dynamic_mask_head.py`` and
``adet/utils/comm.py`` (``compute_locations``, ``aligned_bilinear``).

What it computes: every instance n (a location of the FCOS head) has its own tiny FCN, whose parameters
are the controller's output ``params[n]`` (169 numbers for the default head). The FCN runs on
``cat[rel_coords_n (2), mask_feats[im_inds[n]] (8)]`` (B x 8 mask features at stride 8):
1x1 10 -> 8, ReLU, 1x1 8 -> 8, ReLU, 1x1 8 -> 1, giving mask logits (N, 1, H, W); the module then
upsamples them with :func:`aligned_bilinear` by ``mask_feat_stride / mask_out_stride`` (8 / 4 = 2).

- Parameter layout (:func:`parse_dynamic_params`): ``params[n]`` = all layer weights then all biases,
  split (80, 64, 8) + (8, 8, 1); layer l's weight is row-major (out, in).
- Relative coordinates: ``(instance location - pixel location) / soi[fpn_level]``, locations in input
  pixels, (x, y) order, pixel (i, j) of a stride-s map at ``(j*s + s//2, i*s + s//2)``; soi =
  (64, 128, 256, 512, 1024) for P3..P7 (AdelaiDet's SIZES_OF_INTEREST plus twice the last). Computed in
  at least float32, then cast to the features' dtype (as AdelaiDet).
- Fast path :func:`dynamic_mask_head`: each layer is ONE batched computation over the instances:
  ``impl="bmm"`` (default, a ``baddbmm``) or ``impl="grouped_conv"`` (a 1x1 convolution with
  ``groups=N``, AdelaiDet's ``mask_heads_forward``, via ``zoo.ops.dynamic_filter.per_sample_conv2d``);
  the same numbers, the matmul is faster on CPU (see the benchmarks). The reference
  :func:`dynamic_mask_head_reference` loops over the instances with explicit matrix products.
- :func:`aligned_bilinear` (AdelaiDet): replicate-pad one pixel right/bottom, bilinear resize with
  ``align_corners=True`` to ``factor*H + 1``, shift by ``factor // 2`` (replicate pad top/left), crop to
  ``factor*H x factor*W``. Input pixel i then lands on output pixel ``i*factor + factor//2``, which keeps
  the upsampled map aligned with the stride-``s`` sampling (pixel centres at ``i*s + s//2``).

The module has no learnable parameters; its only state is the ``sizes_of_interest`` buffer (AdelaiDet's
key name, int64). AdelaiDet's training-only ``_iter`` buffer is not kept. ``rel_coords=False`` is
AdelaiDet's ``DISABLE_REL_COORDS=True``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import InputError
from zoo.ops._checks import check_floating, check_same, check_shape
from zoo.ops.dynamic_filter import per_sample_conv2d

__all__ = [
    "DynamicMaskHead",
    "dynamic_mask_head",
    "dynamic_mask_head_reference",
    "dynamic_params_counts",
    "parse_dynamic_params",
    "compute_locations",
    "relative_coordinates",
    "aligned_bilinear",
]


def dynamic_params_counts(in_channels: int = 8, channels: int = 8, num_layers: int = 3,
                          rel_coords: bool = True) -> tuple[list[int], list[int]]:
    """Weight and bias counts per layer of the dynamic FCN: (80, 64, 8), (8, 8, 1) for the defaults."""
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    weight_nums, bias_nums = [], []
    c_in = in_channels + (2 if rel_coords else 0)
    for layer in range(num_layers):
        c_out = 1 if layer == num_layers - 1 else channels
        weight_nums.append(c_in * c_out)
        bias_nums.append(c_out)
        c_in = c_out
    return weight_nums, bias_nums


def parse_dynamic_params(params: torch.Tensor, channels: int, weight_nums: Sequence[int],
                         bias_nums: Sequence[int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Split (N, P) controller outputs into per-layer grouped-conv weights and biases (AdelaiDet layout).

    Returns weights ``[(N*channels, in, 1, 1), ..., (N, in, 1, 1)]`` and biases ``[(N*channels,), ..., (N,)]``:
    the stacked kernels of a ``groups=N`` 1x1 convolution.
    """
    check_shape(params, "N,P", "params", P=sum(weight_nums) + sum(bias_nums))
    if len(weight_nums) != len(bias_nums):
        raise InputError(f"weight_nums and bias_nums must have one entry per layer, got {weight_nums}, {bias_nums}")
    n, num_layers = params.shape[0], len(weight_nums)
    splits = list(torch.split_with_sizes(params, list(weight_nums) + list(bias_nums), dim=1))
    weights, biases = splits[:num_layers], splits[num_layers:]
    for layer in range(num_layers):
        out = 1 if layer == num_layers - 1 else channels
        weights[layer] = weights[layer].reshape(n * out, weight_nums[layer] // out, 1, 1)
        biases[layer] = biases[layer].reshape(n * out)
    return weights, biases


def compute_locations(h: int, w: int, stride: int, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Input-pixel (x, y) of every position of an h x w map of the given stride, row-major: (h*w, 2)."""
    xs = torch.arange(w, device=device, dtype=dtype) * stride
    ys = torch.arange(h, device=device, dtype=dtype) * stride
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((xx.reshape(-1), yy.reshape(-1)), dim=1) + stride // 2


def relative_coordinates(instance_locations: torch.Tensor, locations: torch.Tensor, soi: torch.Tensor) -> torch.Tensor:
    """``(instance_locations[n] - locations[p]) / soi[n]``: (N, 2), (P, 2), (N,) -> (N, 2, P)."""
    rel = instance_locations.reshape(-1, 1, 2) - locations.reshape(1, -1, 2)
    return rel.permute(0, 2, 1) / soi.reshape(-1, 1, 1)


def aligned_bilinear(tensor: torch.Tensor, factor: int) -> torch.Tensor:
    """AdelaiDet's aligned bilinear upsampling by an integer factor: (N, C, H, W) -> (N, C, fH, fW)."""
    check_shape(tensor, "N,C,H,W", "tensor")
    if int(factor) != factor or factor < 1:
        raise InputError(f"aligned_bilinear: factor must be a positive integer, got {factor}")
    factor = int(factor)
    if factor == 1:
        return tensor
    h, w = tensor.shape[-2:]
    if tensor.shape[0] == 0:
        return tensor.new_zeros(0, tensor.shape[1], factor * h, factor * w)
    out = F.pad(tensor, (0, 1, 0, 1), mode="replicate")
    out = F.interpolate(out, size=(factor * h + 1, factor * w + 1), mode="bilinear", align_corners=True)
    out = F.pad(out, (factor // 2, 0, factor // 2, 0), mode="replicate")
    return out[:, :, : factor * h, : factor * w]


def _check_head(inputs: torch.Tensor, params: torch.Tensor, channels: int, weight_nums: Sequence[int],
                bias_nums: Sequence[int]) -> None:
    s = check_shape(inputs, "N,C,H,W", "inputs")
    check_shape(params, "N,P", "params", N=s["N"], P=sum(weight_nums) + sum(bias_nums))
    check_floating(inputs, "inputs")
    check_same(inputs, params, "dynamic_mask_head(inputs, params)")
    first_out = 1 if len(weight_nums) == 1 else channels
    if weight_nums[0] != s["C"] * first_out:
        raise InputError(f"inputs have C={s['C']} channels but the first layer has {weight_nums[0]} weights "
                         f"({weight_nums[0] // first_out} input channels)")


def dynamic_mask_head(inputs: torch.Tensor, params: torch.Tensor, channels: int, weight_nums: Sequence[int],
                      bias_nums: Sequence[int], impl: str = "bmm") -> torch.Tensor:
    """Run every instance's dynamic FCN on its own input: inputs (N, C_in, H, W), params (N, P) -> (N, 1, H, W).

    ReLU between layers. ``impl="bmm"`` (default): per layer one batched matrix product over the
    instances (``baddbmm`` of (N, out, in) weights with (N, in, H*W) features); ``impl="grouped_conv"``:
    per layer one 1x1 convolution with ``groups=N`` (AdelaiDet's ``mask_heads_forward``, via
    ``per_sample_conv2d``). Both compute the same thing; the batched matmul measured 2-8x faster on CPU
    at the CondInst setting (50 instances, 100 x 136), where oneDNN's grouped conv with 10 -> 8 channels
    per group is slow.
    """
    _check_head(inputs, params, channels, weight_nums, bias_nums)
    if impl not in ("bmm", "grouped_conv"):
        raise InputError(f"impl must be 'bmm' or 'grouped_conv', got {impl!r}")
    n, _, h, w = inputs.shape
    weights, biases = parse_dynamic_params(params, channels, weight_nums, bias_nums)
    x = inputs if impl == "grouped_conv" else inputs.reshape(n, inputs.shape[1], h * w)
    for layer, (wt, b) in enumerate(zip(weights, biases)):
        out = bias_nums[layer]
        if impl == "grouped_conv":
            x = per_sample_conv2d(x, wt.reshape(n, out, *wt.shape[1:]), b.reshape(n, out))
        else:
            x = torch.baddbmm(b.reshape(n, out, 1), wt.reshape(n, out, wt.shape[1]), x)
        if layer < len(weights) - 1:
            x = F.relu(x)
    return x.reshape(n, 1, h, w)


def dynamic_mask_head_reference(inputs: torch.Tensor, params: torch.Tensor, channels: int,
                                weight_nums: Sequence[int], bias_nums: Sequence[int]) -> torch.Tensor:
    """Plain implementation: a loop over instances, slicing each instance's parameters by offset and
    applying the layers as (out, in) @ (in, H*W) matrix products."""
    _check_head(inputs, params, channels, weight_nums, bias_nums)
    n, _, h, w = inputs.shape
    num_layers = len(weight_nums)
    bias_offsets = [sum(weight_nums) + sum(bias_nums[:i]) for i in range(num_layers)]
    outs = []
    for i in range(n):
        x = inputs[i].reshape(inputs.shape[1], h * w)
        w_off = 0
        for layer in range(num_layers):
            out = bias_nums[layer]
            weight = params[i, w_off: w_off + weight_nums[layer]].reshape(out, -1)
            bias = params[i, bias_offsets[layer]: bias_offsets[layer] + out]
            x = weight @ x + bias[:, None]
            if layer < num_layers - 1:
                x = x.clamp_min(0)
            w_off += weight_nums[layer]
        outs.append(x.reshape(1, h, w))
    return torch.stack(outs, 0) if outs else inputs.new_zeros(0, 1, h, w)


class DynamicMaskHead(nn.Module):
    """CondInst dynamic mask head (AdelaiDet ``mask_heads_forward_with_coords``).

    ``forward(mask_feats (B, in_channels, H, W), mask_feat_stride, params (N, num_gen_params),
    im_inds (N,) long, instance_locations (N, 2) input-pixel (x, y), fpn_levels (N,) long)``
    -> mask logits (N, 1, H*f, W*f), ``f = mask_feat_stride // mask_out_stride``.
    """

    def __init__(self, in_channels: int = 8, channels: int = 8, num_layers: int = 3, mask_out_stride: int = 4,
                 sizes_of_interest: Sequence[int] = (64, 128, 256, 512), rel_coords: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__()
        self.in_channels, self.channels, self.num_layers = in_channels, channels, num_layers
        self.mask_out_stride, self.rel_coords = mask_out_stride, rel_coords
        self._soi = tuple(int(s) for s in sizes_of_interest) + (2 * int(sizes_of_interest[-1]),)
        self.weight_nums, self.bias_nums = dynamic_params_counts(in_channels, channels, num_layers, rel_coords)
        self.num_gen_params = sum(self.weight_nums) + sum(self.bias_nums)
        self.register_buffer("sizes_of_interest", torch.empty(len(self._soi), dtype=torch.long, device=device))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.sizes_of_interest.copy_(torch.tensor(self._soi, dtype=torch.long))

    def forward(self, mask_feats: torch.Tensor, mask_feat_stride: int, params: torch.Tensor, im_inds: torch.Tensor,
                instance_locations: torch.Tensor, fpn_levels: torch.Tensor) -> torch.Tensor:
        s = check_shape(mask_feats, "B,C,H,W", "mask_feats", C=self.in_channels)
        check_floating(mask_feats, "mask_feats")
        n = check_shape(params, "N,P", "params", P=self.num_gen_params)["N"]
        check_shape(im_inds, "N", "im_inds", N=n)
        check_shape(instance_locations, "N,xy", "instance_locations", N=n, xy=2)
        check_shape(fpn_levels, "N", "fpn_levels", N=n)
        if mask_feat_stride < self.mask_out_stride or mask_feat_stride % self.mask_out_stride:
            raise InputError(f"mask_feat_stride={mask_feat_stride} must be a multiple of "
                             f"mask_out_stride={self.mask_out_stride}")
        h, w = s["H"], s["W"]
        feats = mask_feats[im_inds].reshape(n, self.in_channels, h * w)
        if self.rel_coords:
            coord_dtype = torch.promote_types(torch.float32, mask_feats.dtype)
            locations = compute_locations(h, w, mask_feat_stride, mask_feats.device, coord_dtype)
            soi = self.sizes_of_interest.to(coord_dtype)[fpn_levels]
            rel = relative_coordinates(instance_locations.to(coord_dtype), locations, soi)
            feats = torch.cat((rel.to(mask_feats.dtype), feats), dim=1)
        logits = dynamic_mask_head(feats.reshape(n, feats.shape[1], h, w), params.to(mask_feats.dtype), self.channels,
                                   self.weight_nums, self.bias_nums)
        return aligned_bilinear(logits, mask_feat_stride // self.mask_out_stride)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, channels={self.channels}, num_layers={self.num_layers}, "
                f"mask_out_stride={self.mask_out_stride}, rel_coords={self.rel_coords}")
