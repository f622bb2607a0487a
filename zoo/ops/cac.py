"""Context-adaptive convolution of CaC-Net (Liu, He, Qiao, Ren, Li; ECCV 2020).

Paper: "Learning to Predict Context-adaptive Convolution for Semantic Segmentation",
https://arxiv.org/abs/2004.08222. No official code exists.

What it computes, x: (B, C, H, W) -> (B, C, H, W):
1. key ``K = key_conv(x)`` (1x1, C channels) and query ``Q = query_conv(x)`` (1x1, s*s channels);
2. ``Q'`` = softmax of each query channel over the H*W positions; the CaC kernels are
   ``D^ = K' Q'^T`` (C x s*s per sample: channel c's kernel tap j is the Q_j-weighted spatial average of
   K_c), reshaped to C depthwise s x s kernels and batch-normalised (``kernel_bn``) -> D;
3. depthwise convolution of x with D at dilations 1, 3, 5 (zero 'same' padding) -> W1, W2, W3, fused into a
   spatially-varying weighting map W; the output re-weights the input, ``x * W``;
4. a global pooling branch and multi-head ensembles.

Interpretation choices (the paper text available here loses the formulas; no official code):
- ``separate_kernels=True``: each dilation gets its own kernels D1, D2, D3 ("predicted another two CaC
  kernels"): the query conv has s*s channels PER dilation, the key is shared. ``False`` uses one D at
  all dilations (as an unofficial port).
- ``kernel_norm``: BatchNorm2d over the kernel entries, one channel per (head, dilation, feature channel).
- ``fusion="sigmoid_sum"``: ``W = sigmoid(W1 + W2 + W3)`` (default); ``"sum_sigmoid"``:
  ``W = sigmoid(W1) + sigmoid(W2) + sigmoid(W3)`` (the unofficial port).
- ``heads``: independent (key, query, kernel-BN) sets in parallel; their weighting maps are averaged
  (ensemble), so the output is ``x * mean_h W_h``. Default 1 (the head count is not known).
- ``global_pool=True``: ``y = x * W + ReLU(global_conv(GAP(x)))`` broadcast over H, W (added, so the module
  stays C -> C; no BatchNorm there so that training with batch 1 works).

Functional parts: :func:`cac_kernels` (step 2 without the norm) and :func:`cac_weighting` (step 3:
all heads and dilations as ONE per-sample grouped convolution per dilation, via
``zoo.ops.dynamic_filter.per_sample_conv2d``), each with a plain ``*_reference``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import InputError
from zoo.ops._checks import check_floating, check_same, check_shape
from zoo.ops.dynamic_filter import per_sample_conv2d

__all__ = ["ContextAdaptiveConv", "cac_kernels", "cac_kernels_reference", "cac_weighting", "cac_weighting_reference"]

_FUSIONS = ("sigmoid_sum", "sum_sigmoid")


def _check_kernels(key: torch.Tensor, query: torch.Tensor) -> None:
    s = check_shape(key, "B,C,H,W", "key")
    check_shape(query, "B,S,H,W", "query", B=s["B"], H=s["H"], W=s["W"])
    check_floating(key, "key")
    check_same(key, query, "cac_kernels(key, query)")


def cac_kernels(key: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """CaC kernels ``K' softmax_HW(Q')^T``: key (B, C, H, W), query (B, S, H, W) -> (B, C, S). One bmm."""
    _check_kernels(key, query)
    b, c = key.shape[:2]
    attn = query.reshape(b, query.shape[1], -1).softmax(dim=-1)  # (B, S, HW), softmax over positions
    return torch.bmm(key.reshape(b, c, -1), attn.transpose(1, 2))


def cac_kernels_reference(key: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Plain implementation: for every query channel, the softmax-weighted sum of the key over positions."""
    _check_kernels(key, query)
    b, c = key.shape[:2]
    out = key.new_zeros(b, c, query.shape[1])
    for n in range(b):
        for j in range(query.shape[1]):
            q = query[n, j].flatten()
            w = torch.exp(q - q.max())
            w = w / w.sum()
            out[n, :, j] = (key[n].reshape(c, -1) * w).sum(-1)
    return out


def _check_weighting(x: torch.Tensor, kernels: torch.Tensor, dilations: Sequence[int], fusion: str) -> None:
    s = check_shape(x, "B,C,H,W", "x")
    k = check_shape(kernels, "B,heads,D,C,kH,kW", "kernels", B=s["B"], D=len(dilations), C=s["C"])
    check_floating(x, "x")
    check_same(x, kernels, "cac_weighting(x, kernels)")
    if k["kH"] != k["kW"] or k["kH"] % 2 != 1:
        raise InputError(f"kernels must be square with an odd size, got {tuple(kernels.shape)}")
    if fusion not in _FUSIONS:
        raise InputError(f"fusion must be one of {_FUSIONS}, got {fusion!r}")


def cac_weighting(x: torch.Tensor, kernels: torch.Tensor, dilations: Sequence[int] = (1, 3, 5),
                  fusion: str = "sigmoid_sum") -> torch.Tensor:
    """Weighting map W from per-sample depthwise kernels.

    x: (B, C, H, W); kernels: (B, heads, len(dilations), C, s, s) with odd s -> W (B, C, H, W): for each
    head, ``W_d = depthwise_conv(x, kernels[:, h, d], dilation=dilations[d])``, fused (``fusion``), then
    averaged over the heads. Fast path: one grouped conv per dilation (C groups of ``heads`` outputs each).
    """
    _check_weighting(x, kernels, dilations, fusion)
    b, heads, _, c, s, _ = kernels.shape
    h, w = x.shape[-2:]
    total = None
    for i, d in enumerate(dilations):
        # (B, C*heads, 1, s, s): group c of the per-sample conv produces the `heads` maps of channel c
        weight = kernels[:, :, i].transpose(1, 2).reshape(b, c * heads, 1, s, s)
        wd = per_sample_conv2d(x, weight, padding=d * (s // 2), dilation=d, groups=c)
        wd = wd.sigmoid() if fusion == "sum_sigmoid" else wd
        total = wd if total is None else total + wd
    if fusion == "sigmoid_sum":
        total = total.sigmoid()
    return total.reshape(b, c, heads, h, w).mean(2)


def cac_weighting_reference(x: torch.Tensor, kernels: torch.Tensor, dilations: Sequence[int] = (1, 3, 5),
                            fusion: str = "sigmoid_sum") -> torch.Tensor:
    """Plain implementation: loops over heads, dilations and kernel taps of shifted, zero-padded inputs."""
    _check_weighting(x, kernels, dilations, fusion)
    heads, s = kernels.shape[1], kernels.shape[-1]
    h, w = x.shape[-2:]
    maps = []
    for head in range(heads):
        fused = torch.zeros_like(x)
        for i, d in enumerate(dilations):
            r = d * (s // 2)
            xp = F.pad(x, (r, r, r, r))
            wd = torch.zeros_like(x)
            for ty in range(s):
                for tx in range(s):
                    tap = kernels[:, head, i, :, ty, tx, None, None]
                    wd = wd + tap * xp[:, :, ty * d: ty * d + h, tx * d: tx * d + w]
            fused = fused + (torch.sigmoid(wd) if fusion == "sum_sigmoid" else wd)
        maps.append(torch.sigmoid(fused) if fusion == "sigmoid_sum" else fused)
    return torch.stack(maps, 0).mean(0)


class ContextAdaptiveConv(nn.Module):
    """CaC module: (B, channels, H, W) -> (B, channels, H, W), re-weighted by context-adaptive kernels.

    Args: ``kernel_size`` s (odd; 3), ``dilations`` (1, 3, 5), ``heads``, ``separate_kernels``,
    ``kernel_norm``, ``fusion``, ``global_pool``: see the module docstring for each choice.
    """

    def __init__(self, channels: int, kernel_size: int = 3, dilations: Sequence[int] = (1, 3, 5), heads: int = 1,
                 separate_kernels: bool = True, kernel_norm: bool = True, fusion: str = "sigmoid_sum",
                 global_pool: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"ContextAdaptiveConv: kernel_size must be odd, got {kernel_size}")
        if heads < 1 or not dilations:
            raise ValueError(f"ContextAdaptiveConv: need heads >= 1 and at least one dilation, "
                             f"got heads={heads}, dilations={dilations}")
        if fusion not in _FUSIONS:
            raise ValueError(f"ContextAdaptiveConv: fusion must be one of {_FUSIONS}, got {fusion!r}")
        kw = dict(device=device, dtype=dtype)
        self.channels, self.kernel_size, self.dilations = channels, kernel_size, tuple(dilations)
        self.heads, self.fusion, self.separate_kernels = heads, fusion, separate_kernels
        self.num_kernel_sets = len(self.dilations) if separate_kernels else 1
        self.key_conv = nn.Conv2d(channels, heads * channels, 1, **kw)
        self.query_conv = nn.Conv2d(channels, heads * self.num_kernel_sets * kernel_size ** 2, 1, **kw)
        self.kernel_bn = nn.BatchNorm2d(heads * self.num_kernel_sets * channels, **kw) if kernel_norm else None
        self.global_conv = nn.Conv2d(channels, channels, 1, **kw) if global_pool else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in (self.key_conv, self.query_conv, self.kernel_bn, self.global_conv):
            if m is not None:
                m.reset_parameters()

    def predict_kernels(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> normalised kernels (B, heads, len(dilations), C, s, s)."""
        b, c, h, w = x.shape
        heads, n, s = self.heads, self.num_kernel_sets, self.kernel_size
        key = self.key_conv(x).reshape(b * heads, c, h, w)
        query = self.query_conv(x).reshape(b * heads, n * s * s, h, w)
        d = cac_kernels(key, query).reshape(b, heads, c, n, s, s).transpose(2, 3)  # (B, heads, n, C, s, s)
        if self.kernel_bn is not None:
            d = self.kernel_bn(d.reshape(b, heads * n * c, s, s)).reshape(b, heads, n, c, s, s)
        if n == 1:
            d = d.expand(b, heads, len(self.dilations), c, s, s)
        return d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(x, "B,C,H,W", "x", C=self.channels)
        out = x * cac_weighting(x, self.predict_kernels(x), self.dilations, self.fusion)
        if self.global_conv is not None:
            out = out + F.relu(self.global_conv(F.adaptive_avg_pool2d(x, 1)))
        return out
