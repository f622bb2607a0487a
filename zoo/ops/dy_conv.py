"""Dynamic Convolution: attention over convolution kernels.

Paper: Chen, Dai, Liu, Chen, Yuan, Liu, "Dynamic Convolution: Attention over Convolution Kernels",
CVPR 2020 (https://arxiv.org/abs/1912.03458).

K parallel kernels (default 4) are aggregated per sample with attention weights
``pi(x) = softmax(FC2(ReLU(FC1(GAP(x)))) / tau)`` (sum to 1):
``W_b = sum_k pi_k W_k``, ``b_b = sum_k pi_k b_k``, ``y_b = conv(x_b, W_b) + b_b`` (the paper follows it with
BN + ReLU; that belongs to the model). Computed with
:func:`zoo.ops.dynamic_filter.per_sample_conv2d`: one grouped conv over the batch, or on the CPU a
per-sample loop once the batch's kernels are large (the rule and its measurement:
:func:`zoo.ops.dynamic_filter.per_sample_conv2d_implementation`). Shapes: x (B, C, H, W), attention logits (B, K),
kernels (K, out, C/groups, kh, kw), biases (K, out) -> (B, out, H', W').

Temperature: the paper anneals tau linearly from 30 to 1 over the first 10 epochs (near-uniform
attention early keeps every kernel trained). ``DyConv2d.temperature`` is a Python float (default 1, the
value after annealing); set it per epoch with :func:`set_temperature` ``(model, temperature_schedule(epoch))``.
Under torch.compile a changed temperature triggers one recompile (at most once per epoch).

Interpretation choices (no official code): FC1 reduces C to ``max(C // reduction, min_hidden)`` with
reduction 4 (paper) and ``min_hidden = 4`` so that thin layers (e.g. a 3-channel stem) keep a usable
attention branch; FC1/FC2 are ``nn.Linear`` with bias and default init; every kernel is initialised
independently like ``nn.Conv2d``.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from zoo.errors import InputError
from zoo.ops._checks import check_shape
from zoo.ops.dynamic_filter import _check_kernel_mixture, _ConvLayer, _Padding, _Size2
from zoo.ops.dynamic_filter import MixtureNames, kernel_mixture_conv2d, kernel_mixture_conv2d_reference

__all__ = ["dy_conv2d", "dy_conv2d_reference", "DyConv2d", "set_temperature", "temperature_schedule"]

_NAMES = MixtureNames("attention_logits", "weight", "K")


def _check(x: torch.Tensor, attention_logits: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
           groups: int, temperature: float) -> None:
    """The temperature, then the mixture's tensors (before the softmax, so that errors name the logits)."""
    if not temperature > 0:
        raise InputError(f"temperature must be > 0, got {temperature}")
    _check_kernel_mixture(x, attention_logits, weight, bias, groups, _NAMES)


def dy_conv2d(x: torch.Tensor, attention_logits: torch.Tensor, weight: torch.Tensor,
              bias: Optional[torch.Tensor] = None, temperature: float = 1.0, stride: _Size2 = 1,
              padding: _Padding = 0, dilation: _Size2 = 1, groups: int = 1) -> torch.Tensor:
    """Dynamic convolution given the attention logits: ``pi = softmax(logits / temperature)`` per sample,
    then ``conv(x_b, sum_k pi_k W_k) + sum_k pi_k b_k``.

    ``x`` (B, C, H, W), ``attention_logits`` (B, K) (before the temperature softmax; the attention pi is
    a convex combination: pi_k >= 0, sum_k pi_k = 1), ``weight`` (K, out, C/groups, kh, kw), ``bias``
    (K, out) or None -> (B, out, H', W'). Fast path: :func:`zoo.ops.dynamic_filter.kernel_mixture_conv2d`
    (one matmul aggregates, one per-sample conv: grouped conv or per-sample loop, by device and size).
    """
    _check(x, attention_logits, weight, bias, groups, temperature)
    attention = torch.softmax(attention_logits / temperature, dim=1)
    return kernel_mixture_conv2d(x, attention, weight, bias, stride, padding, dilation, groups, names=_NAMES)


def dy_conv2d_reference(x: torch.Tensor, attention_logits: torch.Tensor, weight: torch.Tensor,
                        bias: Optional[torch.Tensor] = None, temperature: float = 1.0, stride: _Size2 = 1,
                        padding: _Padding = 0, dilation: _Size2 = 1, groups: int = 1) -> torch.Tensor:
    """Plain reference of :func:`dy_conv2d`: explicit (max-shifted) softmax per sample, then
    :func:`zoo.ops.dynamic_filter.kernel_mixture_conv2d_reference` (per-sample kernel sum and ``F.conv2d``)."""
    _check(x, attention_logits, weight, bias, groups, temperature)
    scaled = attention_logits / temperature
    exp = torch.exp(scaled - scaled.amax(dim=1, keepdim=True))
    attention = exp / exp.sum(dim=1, keepdim=True)
    return kernel_mixture_conv2d_reference(x, attention, weight, bias, stride, padding, dilation, groups,
                                           names=_NAMES)


class DyConv2d(_ConvLayer):
    """Dynamic convolution layer (kernels + attention branch), arguments as ``nn.Conv2d`` plus:

    ``num_kernels`` K (paper: 4), ``reduction`` (paper: 4) and ``min_hidden`` (4) for the attention's
    hidden width ``max(in_channels // reduction, min_hidden)``, ``temperature`` (softmax temperature,
    see :func:`set_temperature`). Parameters: ``weight`` (K, out, in/groups, kh, kw), ``bias`` (K, out),
    ``attention.fc1`` / ``attention.fc2`` (nn.Linear). ``forward(x (B, in, H, W)) -> (B, out, H', W')``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: _Size2 = 3, stride: _Size2 = 1,
                 padding: _Padding = 0, dilation: _Size2 = 1, groups: int = 1, bias: bool = True,
                 num_kernels: int = 4, reduction: int = 4, min_hidden: int = 4, temperature: float = 1.0,
                 device=None, dtype=None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        if num_kernels < 1 or reduction < 1 or min_hidden < 1:
            raise ValueError("num_kernels, reduction and min_hidden must be >= 1")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        factory = {"device": device, "dtype": dtype}
        self.num_kernels = num_kernels
        self.temperature = float(temperature)
        hidden = max(in_channels // reduction, min_hidden)
        self.attention = nn.Sequential()
        self.attention.add_module("fc1", nn.Linear(in_channels, hidden, **factory))
        self.attention.add_module("relu", nn.ReLU(inplace=True))
        self.attention.add_module("fc2", nn.Linear(hidden, num_kernels, **factory))
        self.weight = nn.Parameter(
            torch.empty(num_kernels, out_channels, in_channels // groups, *self.kernel_size, **factory))
        self._make_bias(bias, num_kernels, out_channels, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self._reset_bank(self.weight)  # each kernel like an nn.Conv2d
        self.attention.fc1.reset_parameters()
        self.attention.fc2.reset_parameters()

    def set_temperature(self, temperature: float) -> None:
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def attention_logits(self, x: torch.Tensor) -> torch.Tensor:
        """FC2(ReLU(FC1(GAP(x)))): (B, C, H, W) -> (B, K), before the temperature softmax."""
        return self.attention(x.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(x, "B,C,H,W", "x", C=self.in_channels)
        return dy_conv2d(x, self.attention_logits(x), self.weight, self.bias, self.temperature,
                         self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_kernels={self.num_kernels}, temperature={self.temperature}"


def temperature_schedule(epoch: float, start: float = 30.0, end: float = 1.0, anneal_epochs: float = 10.0) -> float:
    """The paper's schedule: tau falls linearly from ``start`` (epoch 0) to ``end`` (epoch
    ``anneal_epochs``) and stays there. Fractional epochs are allowed (per-iteration annealing)."""
    if anneal_epochs <= 0 or epoch >= anneal_epochs:
        return float(end)
    progress = max(float(epoch), 0.0) / anneal_epochs
    return float(start + (end - start) * progress)


def set_temperature(model: nn.Module, temperature: float) -> int:
    """Set the softmax temperature of every :class:`DyConv2d` in ``model``; returns how many were set.

    In a training loop, once per epoch (or iteration): ``set_temperature(model, temperature_schedule(epoch))``.
    """
    count = 0
    for module in model.modules():
        if isinstance(module, DyConv2d):
            module.set_temperature(temperature)
            count += 1
    return count
