"""Per-sample dynamic convolutions at a typical mid-network setting: batch 8, 64 -> 64 channels, 56 x 56,
3 x 3, E = K = T = 4 (CondConv / DyConv / DyNet), and DFN's dynamic local filtering at that setting
(per-channel filters, HDFNet-style) and at DFN's Moving-MNIST setting (1 channel, 64 x 64, 9 x 9, softmax).

fast = the functional / module fast path (one per-sample conv: grouped conv over the batch or a loop of
``F.conv2d``, as zoo.ops.dynamic_filter.per_sample_conv2d_implementation picks; tap accumulation for
local filtering); reference = the plain ``*_reference`` (per-sample loop of ``F.conv2d``;
unfold-multiply-sum). DyConv also runs at 512 -> 512, 7 x 7 (the CPU rule picks the loop there), with
both formulations forced ("grouped conv", "per-sample loop") next to the dispatch.
Modules run in eval mode, no grad; their reference uses the same attention / routing / coefficients.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from benchmarks._bench import Case
from zoo.ops.cond_conv import CondConv2d, CondConvRouting, cond_conv2d_reference
from zoo.ops.dy_conv import DyConv2d, dy_conv2d_reference
from zoo.ops.dynamic_filter import (
    _per_sample_conv2d_grouped,
    _per_sample_conv2d_loop,
    dynamic_conv2d,
    dynamic_conv2d_reference,
    dynamic_local_filter,
    dynamic_local_filter_reference,
    mix_kernels,
)
from zoo.ops.dynet import DyNetConv2d, dynet_conv2d_reference

B, C, H, W, K, E = 8, 64, 56, 56, 3, 4
TYPICAL = f"B={B} {C}->{C} {H}x{W} k={K}"


def _x() -> torch.Tensor:
    return torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(0))


def _dfn_conv() -> dict[str, Callable[[], Any]]:
    x = _x()
    filters = torch.randn(B, C, C, K, K) * 0.05
    return {
        "fast": lambda: dynamic_conv2d(x, filters, padding=1),
        "reference": lambda: dynamic_conv2d_reference(x, filters, padding=1),
    }


def _local(b: int, c: int, h: int, w: int, k: int, per_channel: bool, softmax: bool) -> Callable[[], dict]:
    def setup() -> dict[str, Callable[[], Any]]:
        x = torch.randn(b, c, h, w)
        filters = torch.randn(b, (c if per_channel else 1) * k * k, h, w)
        return {
            "fast": lambda: dynamic_local_filter(x, filters, k, softmax=softmax),
            "reference": lambda: dynamic_local_filter_reference(x, filters, k, softmax=softmax),
        }

    return setup


def _cond_conv() -> dict[str, Callable[[], Any]]:
    x = _x()
    conv = CondConv2d(C, C, K, padding=1, num_experts=E).eval()
    routing = CondConvRouting(C, E).eval()
    return {
        "fast": lambda: conv(x, routing(x)),
        "reference": lambda: cond_conv2d_reference(x, routing(x), conv.expert_weight(), conv.bias, padding=1),
    }


def _dy_conv_case(c: int, size: int) -> Callable[[], dict[str, Callable[[], Any]]]:
    def setup() -> dict[str, Callable[[], Any]]:
        x = torch.randn(B, c, size, size, generator=torch.Generator().manual_seed(0))
        m = DyConv2d(c, c, K, padding=1, num_kernels=E).eval()

        def forced(formulation: Callable[..., torch.Tensor]) -> Callable[[], torch.Tensor]:
            def run() -> torch.Tensor:
                attention = torch.softmax(m.attention_logits(x) / m.temperature, dim=1)
                kernels, biases = mix_kernels(attention, m.weight, m.bias)
                return formulation(x, kernels, biases, 1, 1, 1, 1)
            return run

        return {
            "fast": lambda: m(x),
            "reference": lambda: dy_conv2d_reference(x, m.attention_logits(x), m.weight, m.bias, m.temperature,
                                                     padding=1),
            "grouped conv": forced(_per_sample_conv2d_grouped),
            "per-sample loop": forced(_per_sample_conv2d_loop),
        }

    return setup


def _dynet() -> dict[str, Callable[[], Any]]:
    x = _x()
    m = DyNetConv2d(C, C, K, padding=1, num_kernels=E).eval()
    return {
        "fast": lambda: m(x),
        "reference": lambda: dynet_conv2d_reference(x, m.coefficients(x), m.bank, m.bias, padding=1),
    }


def cases() -> list[Case]:
    return [
        Case(op="dynamic_conv2d", setting=TYPICAL, setup=_dfn_conv),
        Case(op="dynamic_local_filter", setting=f"B={B} C={C} {H}x{W} k={K} per-channel",
             setup=_local(B, C, H, W, K, per_channel=True, softmax=False)),
        Case(op="dynamic_local_filter", setting="B=8 C=1 64x64 k=9 softmax (DFN Moving MNIST)",
             setup=_local(8, 1, 64, 64, 9, per_channel=False, softmax=True)),
        Case(op="CondConv2d", setting=f"{TYPICAL} E={E}", setup=_cond_conv),
        Case(op="DyConv2d", setting=f"{TYPICAL} K={E}", setup=_dy_conv_case(C, H)),
        Case(op="DyConv2d", setting=f"B={B} 512->512 7x7 k={K} K={E}", setup=_dy_conv_case(512, 7)),
        Case(op="DyNetConv2d", setting=f"{TYPICAL} T={E}", setup=_dynet),
    ]
