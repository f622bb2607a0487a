"""DyNet: dynamic convolution as a predicted linear fusion of fixed kernels.

Paper: Zhang, Zhang, Wang, Zhong, "DyNet: Dynamic Convolution for Accelerating Convolutional Neural
Networks", arXiv 2020 (https://arxiv.org/abs/2004.10694). No official code.

A coefficient prediction module maps the input to T coefficients per sample,
``a = FC(GAP(x))`` (B, T); the dynamic generation module fuses a bank of T fixed kernels into one kernel
per sample, ``W_b = sum_t a[b, t] W_t`` (bias likewise), and ``y_b = conv(x_b, W_b) + b_b``. Computed as
one grouped conv over the batch (:func:`zoo.ops.dynamic_filter.per_sample_conv2d`). Shapes: x
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
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from zoo.errors import InputError
from zoo.ops._checks import check_floating, check_same, check_shape
from zoo.ops.dynamic_filter import _Padding, _Size2, mix_kernels, per_sample_conv2d

__all__ = ["dynet_conv2d", "dynet_conv2d_reference", "DyNetConv2d"]


def _check(x: torch.Tensor, coefficients: torch.Tensor, bank: torch.Tensor,
           bias: Optional[torch.Tensor], groups: int) -> None:
    s = check_shape(x, "B,C,H,W", "x")
    check_floating(x, "x")
    if groups < 1 or s["C"] % groups:
        raise InputError(f"x has C={s['C']} channels, which groups={groups} does not divide")
    w = check_shape(bank, "T,out,in_per_group,kh,kw", "bank", in_per_group=s["C"] // groups)
    check_shape(coefficients, "B,T", "coefficients", B=s["B"], T=w["T"])
    check_same(x, bank, "x and bank")
    check_same(x, coefficients, "x and coefficients")
    if bias is not None:
        check_shape(bias, "T,out", "bias", T=w["T"], out=w["out"])
        check_same(x, bias, "x and bias")


def dynet_conv2d(
    x: torch.Tensor,
    coefficients: torch.Tensor,
    bank: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: _Size2 = 1,
    padding: _Padding = 0,
    dilation: _Size2 = 1,
    groups: int = 1,
) -> torch.Tensor:
    """DyNet convolution: ``conv(x_b, sum_t a[b,t] W_t) + sum_t a[b,t] b_t`` with unconstrained ``a``.

    ``x`` (B, C, H, W), ``coefficients`` (B, T), ``bank`` (T, out, C/groups, kh, kw), ``bias`` (T, out)
    or None -> (B, out, H', W'). Fast path: one matmul fuses the bank, one grouped conv.
    """
    _check(x, coefficients, bank, bias, groups)
    kernels, biases = mix_kernels(coefficients, bank, bias)
    return per_sample_conv2d(x, kernels, biases, stride, padding, dilation, groups)


def dynet_conv2d_reference(
    x: torch.Tensor,
    coefficients: torch.Tensor,
    bank: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: _Size2 = 1,
    padding: _Padding = 0,
    dilation: _Size2 = 1,
    groups: int = 1,
) -> torch.Tensor:
    """Plain reference of :func:`dynet_conv2d`: per sample, explicit fusion of the bank and ``F.conv2d``."""
    _check(x, coefficients, bank, bias, groups)
    outs = []
    for b in range(x.shape[0]):
        kernel = sum(coefficients[b, t] * bank[t] for t in range(bank.shape[0]))
        kernel_bias = None if bias is None else sum(coefficients[b, t] * bias[t] for t in range(bias.shape[0]))
        outs.append(F.conv2d(x[b : b + 1], kernel, kernel_bias, stride, padding, dilation, groups))
    return torch.cat(outs, 0)


class DyNetConv2d(nn.Module):
    """DyNet dynamic convolution layer, arguments as ``nn.Conv2d`` plus ``num_kernels`` T (bank size).

    Parameters: ``bank`` (T, out, in/groups, kh, kw), ``bias`` (T, out) or None, ``coefficient_fc``
    (nn.Linear(in, T), zero weight and 1/sqrt(T) bias at init, see module docstring).
    ``forward(x (B, in, H, W)) -> (B, out, H', W')``; ``coefficients(x)`` gives the (B, T) fusion weights.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _Size2 = 3,
        stride: _Size2 = 1,
        padding: _Padding = 0,
        dilation: _Size2 = 1,
        groups: int = 1,
        bias: bool = True,
        num_kernels: int = 4,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        if num_kernels < 1:
            raise ValueError(f"num_kernels must be >= 1, got {num_kernels}")
        factory = {"device": device, "dtype": dtype}
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.num_kernels = num_kernels
        self.coefficient_fc = nn.Linear(in_channels, num_kernels, **factory)
        self.bank = nn.Parameter(torch.empty(num_kernels, out_channels, in_channels // groups, *self.kernel_size, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(num_kernels, out_channels, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for t in range(self.num_kernels):  # each fixed kernel like an nn.Conv2d
            nn.init.kaiming_uniform_(self.bank[t], a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(math.prod(self.bank.shape[2:]))
            nn.init.uniform_(self.bias, -bound, bound)
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
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
                f"bias={self.bias is not None}, num_kernels={self.num_kernels}")
