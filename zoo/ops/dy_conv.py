"""Dynamic Convolution: attention over convolution kernels.

Paper: Chen, Dai, Liu, Chen, Yuan, Liu, "Dynamic Convolution: Attention over Convolution Kernels",
CVPR 2020 (https://arxiv.org/abs/1912.03458).

K parallel kernels (default 4) are aggregated per sample with attention weights
``pi(x) = softmax(FC2(ReLU(FC1(GAP(x)))) / tau)`` (sum to 1):
``W_b = sum_k pi_k W_k``, ``b_b = sum_k pi_k b_k``, ``y_b = conv(x_b, W_b) + b_b`` (the paper follows it with
BN + ReLU; that belongs to the model). Computed as one grouped conv over the batch
(:func:`zoo.ops.dynamic_filter.per_sample_conv2d`). Shapes: x (B, C, H, W), attention logits (B, K),
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
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from zoo.errors import InputError
from zoo.ops._checks import check_floating, check_same, check_shape
from zoo.ops.dynamic_filter import _Padding, _Size2, mix_kernels, per_sample_conv2d

__all__ = ["dy_conv2d", "dy_conv2d_reference", "DyConv2d", "set_temperature", "temperature_schedule"]


def _check(x: torch.Tensor, logits: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
           groups: int, temperature: float) -> None:
    if not temperature > 0:
        raise InputError(f"temperature must be > 0, got {temperature}")
    s = check_shape(x, "B,C,H,W", "x")
    check_floating(x, "x")
    if groups < 1 or s["C"] % groups:
        raise InputError(f"x has C={s['C']} channels, which groups={groups} does not divide")
    w = check_shape(weight, "K,out,in_per_group,kh,kw", "weight", in_per_group=s["C"] // groups)
    check_shape(logits, "B,K", "attention_logits", B=s["B"], K=w["K"])
    check_same(x, weight, "x and weight")
    check_same(x, logits, "x and attention_logits")
    if bias is not None:
        check_shape(bias, "K,out", "bias", K=w["K"], out=w["out"])
        check_same(x, bias, "x and bias")


def dy_conv2d(
    x: torch.Tensor,
    attention_logits: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    temperature: float = 1.0,
    stride: _Size2 = 1,
    padding: _Padding = 0,
    dilation: _Size2 = 1,
    groups: int = 1,
) -> torch.Tensor:
    """Dynamic convolution given the attention logits: ``pi = softmax(logits / temperature)`` per sample,
    then ``conv(x_b, sum_k pi_k W_k) + sum_k pi_k b_k``.

    ``x`` (B, C, H, W), ``attention_logits`` (B, K), ``weight`` (K, out, C/groups, kh, kw), ``bias``
    (K, out) or None -> (B, out, H', W'). Fast path: one matmul aggregates, one grouped conv.
    """
    _check(x, attention_logits, weight, bias, groups, temperature)
    attention = torch.softmax(attention_logits / temperature, dim=1)
    kernels, biases = mix_kernels(attention, weight, bias)
    return per_sample_conv2d(x, kernels, biases, stride, padding, dilation, groups)


def dy_conv2d_reference(
    x: torch.Tensor,
    attention_logits: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    temperature: float = 1.0,
    stride: _Size2 = 1,
    padding: _Padding = 0,
    dilation: _Size2 = 1,
    groups: int = 1,
) -> torch.Tensor:
    """Plain reference of :func:`dy_conv2d`: per sample, explicit softmax, kernel sum and ``F.conv2d``."""
    _check(x, attention_logits, weight, bias, groups, temperature)
    outs = []
    for b in range(x.shape[0]):
        scaled = attention_logits[b] / temperature
        exp = torch.exp(scaled - scaled.max())
        pi = exp / exp.sum()
        kernel = sum(pi[k] * weight[k] for k in range(weight.shape[0]))
        kernel_bias = None if bias is None else sum(pi[k] * bias[k] for k in range(bias.shape[0]))
        outs.append(F.conv2d(x[b : b + 1], kernel, kernel_bias, stride, padding, dilation, groups))
    return torch.cat(outs, 0)


class DyConv2d(nn.Module):
    """Dynamic convolution layer (kernels + attention branch), arguments as ``nn.Conv2d`` plus:

    ``num_kernels`` K (paper: 4), ``reduction`` (paper: 4) and ``min_hidden`` (4) for the attention's
    hidden width ``max(in_channels // reduction, min_hidden)``, ``temperature`` (softmax temperature,
    see :func:`set_temperature`). Parameters: ``weight`` (K, out, in/groups, kh, kw), ``bias`` (K, out),
    ``attention.fc1`` / ``attention.fc2`` (nn.Linear). ``forward(x (B, in, H, W)) -> (B, out, H', W')``.
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
        reduction: int = 4,
        min_hidden: int = 4,
        temperature: float = 1.0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        if num_kernels < 1 or reduction < 1 or min_hidden < 1:
            raise ValueError("num_kernels, reduction and min_hidden must be >= 1")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        factory = {"device": device, "dtype": dtype}
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.num_kernels = num_kernels
        self.temperature = float(temperature)
        hidden = max(in_channels // reduction, min_hidden)
        self.attention = nn.Sequential()
        self.attention.add_module("fc1", nn.Linear(in_channels, hidden, **factory))
        self.attention.add_module("relu", nn.ReLU(inplace=True))
        self.attention.add_module("fc2", nn.Linear(hidden, num_kernels, **factory))
        self.weight = nn.Parameter(
            torch.empty(num_kernels, out_channels, in_channels // groups, *self.kernel_size, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(num_kernels, out_channels, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for k in range(self.num_kernels):  # each kernel like an nn.Conv2d
            nn.init.kaiming_uniform_(self.weight[k], a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(math.prod(self.weight.shape[2:]))
            nn.init.uniform_(self.bias, -bound, bound)
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
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
                f"bias={self.bias is not None}, num_kernels={self.num_kernels}, temperature={self.temperature}")


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
