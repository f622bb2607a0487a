"""DyNet: dynamic convolution as a predicted linear fusion of fixed kernels.

Paper: Zhang, Zhang, Wang, Zhong, "DyNet: Dynamic Convolution for Accelerating Convolutional Neural
Networks", arXiv 2020 (https://arxiv.org/abs/2004.10694). No official code.

A coefficient prediction module maps the input to T coefficients per sample,
``a = FC(GAP(x))`` (B, T); the dynamic generation module fuses a bank of T fixed kernels into one kernel
per sample, ``W_b = sum_t a[b, t] W_t`` (bias likewise), and ``y_b = conv(x_b, W_b) + b_b``. Computed as
one grouped conv over the batch, or a per-sample loop where that is faster
(:func:`zoo.ops.dynamic_filter.per_sample_conv2d`). Shapes: x
(B, C, H, W), coefficients (B, T), bank (T, out, C/groups, kh, kw), bank biases (T, out) -> (B, out, H', W').

Interpretation vs Dynamic Convolution (``zoo.ops.dy_conv``) and CondConv (``zoo.ops.cond_conv``), all
three being the same kernel mixture: DyConv constrains the weights to a softmax (convex combination, a
kernel inside the bank's convex hull, scale fixed), CondConv to sigmoids in (0, 1); DyNet's coefficients
are a plain *linear* fusion: unconstrained real numbers (no activation), so the fused kernel can lie
anywhere in the span of the bank, including sign flips and rescaling. Decision on normalisation: the
fused kernel is NOT normalised by the coefficients (no division by their sum or norm, which would make
the layer scale-invariant in ``a`` and undefined near a = 0); its per-sample scale is left to the BN that
follows every dynamic conv in the paper's networks. Instead the predictor is initialised so that the
layer starts as a static, variance-preserving conv: ``fc.weight = 0`` and ``fc.bias = 1/sqrt(T)``, so at
init ``W = (1/sqrt(T)) sum_t W_t`` for every sample, which has the variance of one ``nn.Conv2d``-
initialised kernel (the T bank kernels are independent). The paper's exact predictor is unconfirmed
(no code); GAP + one FC without activation is our reading. ``num_kernels`` T is an argument.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from zoo.ops._checks import check_shape
from zoo.ops.dynamic_filter import _ConvLayer, _Padding, _Size2
from zoo.ops.dynamic_filter import MixtureNames, kernel_mixture_conv2d, kernel_mixture_conv2d_reference

__all__ = ["dynet_conv2d", "dynet_conv2d_reference", "DyNetConv2d"]

_NAMES = MixtureNames("coefficients", "bank", "T")


def dynet_conv2d(x: torch.Tensor, coefficients: torch.Tensor, bank: torch.Tensor,
                 bias: Optional[torch.Tensor] = None, stride: _Size2 = 1, padding: _Padding = 0,
                 dilation: _Size2 = 1, groups: int = 1) -> torch.Tensor:
    """DyNet convolution: ``conv(x_b, sum_t a[b,t] W_t) + sum_t a[b,t] b_t`` with unconstrained ``a``.

    ``x`` (B, C, H, W), ``coefficients`` a (B, T) (plain linear fusion weights, any real numbers: no
    softmax or sigmoid, no normalisation), ``bank`` (T, out, C/groups, kh, kw), ``bias`` (T, out) or None
    -> (B, out, H', W'). Fast path: :func:`zoo.ops.dynamic_filter.kernel_mixture_conv2d` (one matmul fuses
    the bank, one per-sample conv).
    """
    return kernel_mixture_conv2d(x, coefficients, bank, bias, stride, padding, dilation, groups, names=_NAMES)


def dynet_conv2d_reference(x: torch.Tensor, coefficients: torch.Tensor, bank: torch.Tensor,
                           bias: Optional[torch.Tensor] = None, stride: _Size2 = 1, padding: _Padding = 0,
                           dilation: _Size2 = 1, groups: int = 1) -> torch.Tensor:
    """Plain reference of :func:`dynet_conv2d`: per sample, explicit fusion of the bank and ``F.conv2d``."""
    return kernel_mixture_conv2d_reference(x, coefficients, bank, bias, stride, padding, dilation, groups,
                                           names=_NAMES)


class DyNetConv2d(_ConvLayer):
    """DyNet dynamic convolution layer, arguments as ``nn.Conv2d`` plus ``num_kernels`` T (bank size).

    Parameters: ``bank`` (T, out, in/groups, kh, kw), ``bias`` (T, out) or None, ``coefficient_fc``
    (nn.Linear(in, T), zero weight and 1/sqrt(T) bias at init, see module docstring).
    ``forward(x (B, in, H, W)) -> (B, out, H', W')``; ``coefficients(x)`` gives the (B, T) fusion weights.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: _Size2 = 3, stride: _Size2 = 1,
                 padding: _Padding = 0, dilation: _Size2 = 1, groups: int = 1, bias: bool = True,
                 num_kernels: int = 4, device=None, dtype=None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        if num_kernels < 1:
            raise ValueError(f"num_kernels must be >= 1, got {num_kernels}")
        factory = {"device": device, "dtype": dtype}
        self.num_kernels = num_kernels
        self.coefficient_fc = nn.Linear(in_channels, num_kernels, **factory)
        self.bank = nn.Parameter(torch.empty(num_kernels, out_channels, in_channels // groups, *self.kernel_size, **factory))
        self._make_bias(bias, num_kernels, out_channels, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self._reset_bank(self.bank)  # each fixed kernel like an nn.Conv2d
        nn.init.zeros_(self.coefficient_fc.weight)
        nn.init.constant_(self.coefficient_fc.bias, 1.0 / math.sqrt(self.num_kernels))

    def coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """Fusion coefficients ``FC(GAP(x))``: (B, C, H, W) -> (B, T), unconstrained."""
        return self.coefficient_fc(x.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(x, "B,C,H,W", "x", C=self.in_channels)
        return dynet_conv2d(x, self.coefficients(x), self.bank, self.bias,
                            self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_kernels={self.num_kernels}"
