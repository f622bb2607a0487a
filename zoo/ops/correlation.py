"""Correlation layer (cost volume) of FlowNetC.

Paper: Dosovitskiy et al., "FlowNet: Learning Optical Flow with Convolutional Networks", ICCV 2015,
https://arxiv.org/abs/1504.06852 (eq. 1 and Sec. 3).

What it computes: for two feature maps ``f1, f2`` of shape (B, C, H, W) and every displacement
``(dy, dx) = ((i - r) * stride, (j - r) * stride)`` with ``r = max_displacement // stride`` and
``i, j = 0 .. D - 1``, ``D = 2 r + 1``::

    out[b, i * D + j, y, x] = sum_c sum_(u,v) f1[b, c, y+u, x+v] * f2[b, c, y+u+dy, x+v+dx] / N

with ``(u, v)`` over the ``kernel_size x kernel_size`` window centred on 0 and ``N = kernel_size**2 * C``
when ``normalize`` (``N = 1`` otherwise). Shapes: f1, f2 (B, C, H, W) -> out (B, D*D, H, W); FlowNetC
(max_displacement 20, stride 2, kernel_size 1) gives 21 x 21 = 441 channels.

Interpretation choices (the paper gives eq. 1 without normalisation or layout):
- Channel order: dy outer, dx inner (``i * D + j``), as NVIDIA/flownet2-pytorch's Correlation
  (``tc = (tj + rad) * D + (ti + rad)`` with ``tj`` the vertical displacement) and
  spatial-correlation-sampler's (B, PH, PW, H, W) output reshaped to (B, PH*PW, H, W) by
  ClementPinard/FlowNetPytorch (``models/util.py: correlate``).
- Normalisation: divided by ``kernel_size**2 * C``, the Caffe / flownet2 ``sumelems``; for the
  FlowNetC setting (kernel_size 1) this is FlowNetPytorch's ``/ input1.size(1)``, so both ports agree.
  It makes the output a mean product whose scale does not depend on C or the window size.
  FlowNetC's LeakyReLU after the correlation belongs to the model, not to this operator.
- Out of bounds: zero padding (a product with a position outside either map contributes 0); the output
  keeps the input's H x W (first-image stride ``stride1`` = 1). Displacements are multiples of
  ``stride`` (``stride2`` in Caffe terms) up to ``r * stride``, which is below ``max_displacement``
  when it is not a multiple of ``stride`` (as in flownet2's ``displacement_rad``).
- kernel_size > 1 (odd only): the k x k window is centred and the output keeps H x W (flownet2 crops a
  border instead); equal to spatial-correlation-sampler with ``padding = kernel_size // 2``.

Fast path: for each vertical displacement, one batched matmul per image row between f1's row
(W x C) and f2's shifted, padded row (C x W'), then the band of the W x W' product that holds the D
horizontal displacements is read as a strided view (``unfold`` of the flattened product with step
W' + 1). Columns are split by ``x mod stride`` so that only every ``stride``-th column of f2 is
multiplied, which cuts W' from W + 2 r stride to about W / stride + 2 r per split.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import InputError
from zoo.ops._checks import check_floating, check_same, check_shape

__all__ = ["Correlation", "correlation", "correlation_reference"]


def _check_args(max_displacement: int, stride: int, kernel_size: int) -> None:
    for name, value, low in (("max_displacement", max_displacement, 0), ("stride", stride, 1),
                             ("kernel_size", kernel_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"correlation: {name} must be an int >= {low}, got {value!r}")
    if kernel_size % 2 == 0:
        raise ValueError(f"correlation: kernel_size must be odd (a centred window), got {kernel_size}")


def _check_inputs(f1: torch.Tensor, f2: torch.Tensor) -> tuple[int, int, int, int]:
    s = check_shape(f1, "B,C,H,W", "f1")
    check_shape(f2, "B,C,H,W", "f2", **s)
    check_floating(f1, "f1")
    check_same(f1, f2, "correlation(f1, f2)")
    if s["C"] == 0:
        raise InputError(f"f1 and f2 must have at least one channel, got shape {tuple(f1.shape)}")
    return s["B"], s["C"], s["H"], s["W"]


def _window(out: torch.Tensor, kernel_size: int, normalize: bool) -> torch.Tensor:
    """Sum (or mean, when normalising) of the kernel_size=1 volume over the centred k x k window."""
    if kernel_size == 1:
        return out
    out = F.avg_pool2d(out, kernel_size, stride=1, padding=kernel_size // 2, count_include_pad=True)
    return out if normalize else out * (kernel_size * kernel_size)


def correlation_reference(
    f1: torch.Tensor,
    f2: torch.Tensor,
    max_displacement: int = 20,
    stride: int = 2,
    kernel_size: int = 1,
    normalize: bool = True,
) -> torch.Tensor:
    """Plain loop over the D*D displacements (and the window): shift f2, multiply, sum over channels.

    Same arguments and result as :func:`correlation`; kept for the tests.
    """
    _check_args(max_displacement, stride, kernel_size)
    B, C, H, W = _check_inputs(f1, f2)
    r = max_displacement // stride
    D, P, kr = 2 * r + 1, r * stride, kernel_size // 2
    f1p = F.pad(f1, (kr, kr, kr, kr))
    f2p = F.pad(f2, (P + kr,) * 4)
    channels = []
    for i in range(D):
        for j in range(D):
            acc = f1.new_zeros(B, H, W)
            for u in range(kernel_size):
                for v in range(kernel_size):
                    a = f1p[:, :, u:u + H, v:v + W]
                    b = f2p[:, :, i * stride + u:i * stride + u + H, j * stride + v:j * stride + v + W]
                    acc = acc + (a * b).sum(1)
            channels.append(acc)
    out = torch.stack(channels, 1)
    return out / (kernel_size * kernel_size * C) if normalize else out


def correlation(
    f1: torch.Tensor,
    f2: torch.Tensor,
    max_displacement: int = 20,
    stride: int = 2,
    kernel_size: int = 1,
    normalize: bool = True,
) -> torch.Tensor:
    """FlowNet correlation (cost volume) of ``f1`` against ``f2``, see the module docstring.

    Args:
        f1, f2: (B, C, H, W) feature maps of the first and second image (same device and dtype).
        max_displacement: largest displacement in pixels (FlowNetC: 20).
        stride: step between displacements (Caffe ``stride2``; FlowNetC: 2).
        kernel_size: odd side of the compared patches (FlowNetC: 1).
        normalize: divide by ``kernel_size**2 * C``.

    Returns:
        (B, D*D, H, W) with ``D = 2 * (max_displacement // stride) + 1``; channel ``i * D + j`` holds
        displacement ``((i - r) * stride, (j - r) * stride)`` (dy outer, dx inner).
    """
    _check_args(max_displacement, stride, kernel_size)
    B, C, H, W = _check_inputs(f1, f2)
    r = max_displacement // stride
    D, P = 2 * r + 1, r * stride
    if H == 0 or W == 0:
        return f1.new_zeros(B, D * D, H, W)

    # Rows first, then batch: the rows of f2 for one dy are then one contiguous block for any B.
    a_all = f1.permute(2, 0, 3, 1).contiguous()                        # (H, B, W, C)
    f2p = F.pad(f2, (P, P, P, P)).permute(2, 0, 3, 1)                   # (H + 2P, B, W + 2P, C)
    wq0 = -(-W // stride)                                               # columns in split q = 0
    splits = []
    for q in range(min(stride, W)):
        # Output columns x = q + stride * x' only meet f2 columns q + stride * (x' + j), j < D.
        wq = (W - q + stride - 1) // stride
        a = a_all[:, :, q::stride].reshape(H * B, wq, C)               # (H*B, Wq, C), a view
        length = wq + 2 * r
        b = f2p[:, :, q::stride][:, :, :length].contiguous()            # (H + 2P, B, L, C)
        rows = []
        for i in range(D):
            b_i = b[i * stride:i * stride + H].reshape(H * B, length, C)  # a view
            full = torch.bmm(a, b_i.transpose(1, 2))                    # (H*B, Wq, L)
            # full[n, x', x' + j] sits at flat index x' * (L + 1) + j.
            rows.append(full.flatten(1).unfold(1, D, length + 1)[:, :wq])  # (H*B, Wq, D)
        split = torch.stack(rows, 1).view(H, B, D, wq, D)
        if wq < wq0:
            split = F.pad(split, (0, 0, 0, wq0 - wq))
        splits.append(split)
    n_splits = len(splits)
    out = torch.stack(splits, 4).reshape(H, B, D, wq0 * n_splits, D)[:, :, :, :W]  # x = q + stride x'
    out = out.permute(1, 2, 4, 0, 3).reshape(B, D * D, H, W)
    if normalize:
        out = out / C
    return _window(out, kernel_size, normalize)


class Correlation(nn.Module):
    """FlowNetC's correlation layer as a module (no parameters); see :func:`correlation`.

    ``Correlation()`` is the FlowNetC setting (max displacement 20, stride 2, kernel 1, divided by C,
    441 output channels). Matches ``spatial_correlation_sample(f1, f2, kernel_size=1, patch_size=21,
    stride=1, padding=0, dilation_patch=2)`` reshaped to (B, 441, H, W) and divided by C, the call in
    ClementPinard/FlowNetPytorch, and NVIDIA/flownet2-pytorch's ``Correlation(pad_size=20,
    kernel_size=1, max_displacement=20, stride1=1, stride2=2)``.
    """

    def __init__(self, max_displacement: int = 20, stride: int = 2, kernel_size: int = 1,
                 normalize: bool = True) -> None:
        super().__init__()
        _check_args(max_displacement, stride, kernel_size)
        self.max_displacement = max_displacement
        self.stride = stride
        self.kernel_size = kernel_size
        self.normalize = normalize

    @property
    def out_channels(self) -> int:
        return (2 * (self.max_displacement // self.stride) + 1) ** 2

    def forward(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        return correlation(f1, f2, self.max_displacement, self.stride, self.kernel_size, self.normalize)

    def extra_repr(self) -> str:
        return (f"max_displacement={self.max_displacement}, stride={self.stride}, "
                f"kernel_size={self.kernel_size}, normalize={self.normalize}")
