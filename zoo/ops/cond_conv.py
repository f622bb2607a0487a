"""CondConv: conditionally parameterized convolution.

Paper: Yang, Bender, Le, Ngiam, "CondConv: Conditionally Parameterized Convolutions for Efficient
Inference", NeurIPS 2019 (https://arxiv.org/abs/1904.04971).

Each sample b gets its own kernel ``W_b = sum_e r[b, e] * W_e`` (and bias ``b_b = sum_e r[b, e] * b_e``)
from E expert kernels and routing weights ``r = sigmoid(Linear(GAP(x)))`` (:class:`CondConvRouting`),
then ``y_b = conv(x_b, W_b) + b_b`` — equal to a mixture of E convolutions at the cost of one. Computed as
one grouped conv over the batch, or a per-sample loop where that is faster
(:func:`zoo.ops.dynamic_filter.per_sample_conv2d`).

Shapes: x (B, C, H, W), routing weights (B, E), experts (E, out, C/groups, kh, kw) -> (B, out, H', W').
:class:`CondConv2d` follows timm's ``timm.layers.CondConv2d`` so that converted ``tf_efficientnet_cc_*``
weights load unchanged: ``weight`` (E, out*(C/groups)*kh*kw), ``bias`` (E, out) (no bias by default),
each expert initialised like ``nn.Conv2d`` (kaiming-uniform a=sqrt(5), bias uniform +-1/sqrt(fan_in)),
routing weights passed to ``forward(x, routing_weights)`` because the paper (and timm's EfficientNet
blocks) compute ONE routing per block and share it across the block's convs. Unlike timm, padding is
explicit (int / pair / "same" / "valid" as ``nn.Conv2d``; TF-style asymmetric "same" is not supported).

Interpretation choice: the routing's optional dropout acts on the pooled features before the linear
layer (the placement of common PyTorch ports; timm's EfficientNet blocks have none); default 0.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from zoo.ops._checks import check_shape
from zoo.ops.dynamic_filter import _ConvLayer, _Padding, _Size2
from zoo.ops.dynamic_filter import MixtureNames, kernel_mixture_conv2d, kernel_mixture_conv2d_reference

__all__ = ["cond_conv2d", "cond_conv2d_reference", "CondConv2d", "CondConvRouting"]

_NAMES = MixtureNames("routing_weights", "weight", "E")


def cond_conv2d(x: torch.Tensor, routing_weights: torch.Tensor, weight: torch.Tensor,
                bias: Optional[torch.Tensor] = None, stride: _Size2 = 1, padding: _Padding = 0,
                dilation: _Size2 = 1, groups: int = 1) -> torch.Tensor:
    """CondConv: ``conv(x_b, sum_e r[b,e] W_e) + sum_e r[b,e] b_e`` for every sample b.

    ``x`` (B, C, H, W), ``routing_weights`` r (B, E) (the caller's routing, in CondConv
    ``sigmoid(Linear(GAP(x)))``, see :class:`CondConvRouting`), ``weight`` the experts
    (E, out, C/groups, kh, kw), ``bias`` (E, out) or None -> (B, out, H', W').
    Fast path: :func:`zoo.ops.dynamic_filter.kernel_mixture_conv2d` (one matmul mixes the experts, one
    per-sample conv).
    """
    return kernel_mixture_conv2d(x, routing_weights, weight, bias, stride, padding, dilation, groups, names=_NAMES)


def cond_conv2d_reference(x: torch.Tensor, routing_weights: torch.Tensor, weight: torch.Tensor,
                          bias: Optional[torch.Tensor] = None, stride: _Size2 = 1, padding: _Padding = 0,
                          dilation: _Size2 = 1, groups: int = 1) -> torch.Tensor:
    """Plain reference of :func:`cond_conv2d` (:func:`zoo.ops.dynamic_filter.kernel_mixture_conv2d_reference`):
    loops over samples and experts, one ``F.conv2d`` each sample; the routing weights are used as given."""
    return kernel_mixture_conv2d_reference(x, routing_weights, weight, bias, stride, padding, dilation, groups,
                                           names=_NAMES)


class CondConv2d(_ConvLayer):
    """CondConv layer with timm's parameter layout (see module docstring).

    Arguments as ``nn.Conv2d`` plus ``num_experts`` (E); ``bias`` defaults to False as in timm.
    ``forward(x (B, in, H, W), routing_weights (B, E)) -> (B, out, H', W')``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: _Size2 = 3, stride: _Size2 = 1,
                 padding: _Padding = 0, dilation: _Size2 = 1, groups: int = 1, bias: bool = False,
                 num_experts: int = 4, device=None, dtype=None) -> None:
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        self.num_experts = num_experts
        self.weight_shape = (out_channels, in_channels // groups) + self.kernel_size
        self.weight = nn.Parameter(torch.empty(num_experts, math.prod(self.weight_shape), device=device, dtype=dtype))
        self._make_bias(bias, num_experts, out_channels, device=device, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self._reset_bank(self.expert_weight())  # every expert like nn.Conv2d (timm's initializer)

    def expert_weight(self) -> torch.Tensor:
        """The experts as conv kernels: (E, out, in/groups, kh, kw) (a view of ``weight``)."""
        return self.weight.view(self.num_experts, *self.weight_shape)

    def forward(self, x: torch.Tensor, routing_weights: torch.Tensor) -> torch.Tensor:
        check_shape(x, "B,C,H,W", "x", C=self.in_channels)
        return cond_conv2d(x, routing_weights, self.expert_weight(), self.bias,
                           self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_experts={self.num_experts}"


class CondConvRouting(nn.Module):
    """CondConv routing function ``r = sigmoid(Linear(dropout(GAP(x))))``: (B, C, H, W) -> (B, E).

    One per block, shared by the block's :class:`CondConv2d` layers. ``fc`` is timm's ``routing_fn``
    (nn.Linear(in_channels, num_experts), default nn.Linear init).
    """

    def __init__(self, in_channels: int, num_experts: int = 4, dropout: float = 0.0, device=None, dtype=None) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_channels = in_channels
        self.num_experts = num_experts
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_channels, num_experts, device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        self.fc.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(x, "B,C,H,W", "x", C=self.in_channels)
        pooled = x.mean(dim=(2, 3))
        return torch.sigmoid(self.fc(self.dropout(pooled)))
