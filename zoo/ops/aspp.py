"""Atrous Spatial Pyramid Pooling (ASPP), DeepLab v2 and v3.

Papers:
- DeepLab v2: Chen, Papandreou, Kokkinos, Murphy, Yuille, "DeepLab: Semantic Image Segmentation with
  Deep Convolutional Nets, Atrous Convolution, and Fully Connected CRFs", TPAMI 2017,
  https://arxiv.org/abs/1606.00915
- DeepLab v3: Chen, Papandreou, Schroff, Adam, "Rethinking Atrous Convolution for Semantic Image
  Segmentation", 2017, https://arxiv.org/abs/1706.05587

What it computes, for an input ``x`` of shape (B, C_in, H, W):

- ``mode="v2"``: one 3x3 convolution with bias per rate r (dilation r, padding r), each mapping
  C_in -> C_out (the number of classes in DeepLab v2), and the branch outputs are SUMMED:
  ``y = sum_r conv3x3_r(x)``. Output (B, C_out, H, W).
- ``mode="v3"``: five parallel branches of C_out (256) channels each: a 1x1 conv, one 3x3 atrous conv
  per rate, and image pooling (global average -> 1x1 conv -> BN -> ReLU -> broadcast back to H x W);
  every conv branch is conv (no bias) -> BN -> ReLU. The branches are concatenated and projected by a
  1x1 conv (no bias) -> BN -> ReLU -> Dropout(0.5). Output (B, C_out, H, W).

Fast path and interpretation choices:
- A 3x3 conv with dilation r >= H and r >= W only ever reads zero padding away from its centre tap,
  so it equals a 1x1 conv with the centre tap (the degeneration described in DeepLab v3, Sec. 3.3);
  with r >= H only (or r >= W only) it equals a 1x3 (3x1) conv. :func:`atrous_conv2d` takes these
  exact shortcuts when the sizes are known Python ints (eager mode, static-shape tracing); with
  symbolic (dynamic) sizes it always runs the full 3x3 conv, so no shape guard is added.
- The image-pooling branch is spatially constant, so its share of the 1x1 projection is a per-channel
  vector: ``project(cat[b_0..b_n, pool]) = W[:, :n*C] * cat[b_0..b_n] + W[:, n*C:] @ pool``. The fast
  path never materialises the broadcast pooled map (bilinear upsampling of a 1x1 map, as torchvision
  does, is the same broadcast).
- v2: the branch biases are summed and added once.
- Module key names of v3 follow torchvision's ``ASPP`` (``convs.0`` 1x1 branch, ``convs.1..n`` atrous
  branches, ``convs.{n+1}`` pooling as (pool, conv, bn, relu), ``project`` as (conv, bn, relu,
  dropout)), so torchvision ``deeplabv3_*`` state dicts load 1:1. v2 keys are ``convs.i.{weight,bias}``.
- The v3 pooling branch applies BN to a 1x1 map: in training mode it needs batch size > 1 (as in
  torchvision).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.errors import InputError
from zoo.ops._checks import check_floating, check_shape

__all__ = ["ASPP", "aspp_reference", "aspp_v2", "aspp_v2_reference", "atrous_conv2d"]

_DEFAULT_RATES = {"v2": (6, 12, 18, 24), "v3": (6, 12, 18)}


def atrous_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, rate: int) -> Tensor:
    """3x3 convolution with dilation ``rate`` and padding ``rate`` ("same" output size).

    x: (B, C_in, H, W), weight: (C_out, C_in, 3, 3), bias: (C_out,) or None -> (B, C_out, H, W).
    Drops the taps that can only read zero padding (see the module docstring); the result equals
    ``F.conv2d(x, weight, bias, padding=rate, dilation=rate)``.
    """
    h, w = x.shape[-2], x.shape[-1]
    if isinstance(h, int) and isinstance(w, int) and rate > 1:
        if rate >= h and rate >= w:
            # centre tap only: a 1x1 conv, as a matmul (on CPU faster than a 1x1 conv with few outputs)
            y = torch.matmul(weight[:, :, 1, 1], x.flatten(2)).unflatten(2, (h, w))
            return y if bias is None else y + bias[:, None, None]
        if rate >= h:
            return F.conv2d(x, weight[:, :, 1:2, :], bias, padding=(0, rate), dilation=(1, rate))
        if rate >= w:
            return F.conv2d(x, weight[:, :, :, 1:2], bias, padding=(rate, 0), dilation=(rate, 1))
    return F.conv2d(x, weight, bias, padding=rate, dilation=rate)


def _check_v2_args(x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor] | None, rates: Sequence[int]) -> None:
    check_floating(x, "x")
    sizes = check_shape(x, "B,C,H,W", "x")
    if len(weights) == 0 or len(weights) != len(rates) or (biases is not None and len(biases) != len(rates)):
        raise InputError(
            f"aspp_v2: need one weight (and bias) per rate, got {len(weights)} weights, "
            f"{None if biases is None else len(biases)} biases and {len(rates)} rates"
        )
    for i, wt in enumerate(weights):
        check_shape(wt, "C_out,C_in,kh,kw", f"weights[{i}]", C_in=sizes["C"], kh=3, kw=3)


def aspp_v2_reference(
    x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor] | None, rates: Sequence[int]
) -> Tensor:
    """DeepLab v2 ASPP, plain: one full 3x3 atrous ``F.conv2d`` per rate, outputs summed."""
    _check_v2_args(x, weights, biases, rates)
    out = None
    for i, rate in enumerate(rates):
        b = None if biases is None else biases[i]
        y = F.conv2d(x, weights[i], b, padding=rate, dilation=rate)
        out = y if out is None else out + y
    return out


def aspp_v2(x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor] | None, rates: Sequence[int]) -> Tensor:
    """DeepLab v2 ASPP: ``sum_i conv3x3(x, weights[i], biases[i], dilation=rates[i])``.

    x: (B, C_in, H, W); weights[i]: (C_out, C_in, 3, 3); biases[i]: (C_out,) -> (B, C_out, H, W).
    Biases are summed and added once; degenerate rates use the reduced kernels of :func:`atrous_conv2d`.
    """
    _check_v2_args(x, weights, biases, rates)
    bias = None if biases is None else torch.stack(list(biases)).sum(0)
    out = atrous_conv2d(x, weights[0], bias, rates[0])
    for wt, rate in zip(weights[1:], rates[1:]):
        out = out + atrous_conv2d(x, wt, None, rate)
    return out


class _ASPPPooling(nn.Sequential):
    """Image pooling branch: (AdaptiveAvgPool2d(1), conv1x1, norm, ReLU); indices as torchvision's."""


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling, DeepLab v2 (summed logits) or v3 (concat + projection).

    Args:
        in_channels: C_in of the input feature map.
        out_channels: v2: number of classes (each branch predicts logits); v3: branch width (256).
        rates: dilation rates of the 3x3 branches; default (6, 12, 18, 24) for v2, (6, 12, 18) for v3
            (the paper's output stride 16 rates; double them at output stride 8).
        mode: "v2" or "v3".
        norm_layer: v3 only; ``callable(num_features) -> nn.Module``, default ``nn.BatchNorm2d``.
        dropout: v3 only; dropout probability after the projection (0.5 as in torchvision).

    Shapes: (B, C_in, H, W) -> (B, out_channels, H, W).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        rates: Sequence[int] | None = None,
        *,
        mode: str = "v3",
        norm_layer: Callable[[int], nn.Module] | None = None,
        dropout: float = 0.5,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if mode not in _DEFAULT_RATES:
            raise ValueError(f"ASPP mode must be 'v2' or 'v3', got {mode!r}")
        rates = tuple(int(r) for r in (rates if rates is not None else _DEFAULT_RATES[mode]))
        if not rates or any(r < 1 for r in rates):
            raise ValueError(f"ASPP rates must be a non-empty sequence of positive ints, got {rates}")
        if mode == "v2" and norm_layer is not None:
            raise ValueError("ASPP v2 has no normalisation layers; norm_layer applies to mode='v3' only")
        self.mode = mode
        self.rates = rates
        self.in_channels = in_channels
        self.out_channels = out_channels
        fk = {"device": device, "dtype": dtype}

        if mode == "v2":
            self.convs = nn.ModuleList(
                nn.Conv2d(in_channels, out_channels, 3, padding=r, dilation=r, bias=True, **fk) for r in rates
            )
        else:
            def norm(c: int) -> nn.Module:
                if norm_layer is None:
                    return nn.BatchNorm2d(c, **fk)
                m = norm_layer(c)
                return m.to(device=device, dtype=dtype) if device is not None or dtype is not None else m

            branches: list[nn.Module] = [
                nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False, **fk), norm(out_channels), nn.ReLU())
            ]
            for r in rates:
                branches.append(
                    nn.Sequential(
                        nn.Conv2d(in_channels, out_channels, 3, padding=r, dilation=r, bias=False, **fk),
                        norm(out_channels),
                        nn.ReLU(),
                    )
                )
            branches.append(
                _ASPPPooling(
                    nn.AdaptiveAvgPool2d(1),
                    nn.Conv2d(in_channels, out_channels, 1, bias=False, **fk),
                    norm(out_channels),
                    nn.ReLU(),
                )
            )
            self.convs = nn.ModuleList(branches)
            self.project = nn.Sequential(
                nn.Conv2d(len(branches) * out_channels, out_channels, 1, bias=False, **fk),
                norm(out_channels),
                nn.ReLU(),
                nn.Dropout(dropout),
            )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """v2: N(0, 0.01) weights and zero biases (DeepLab v2); v3: torchvision's default inits."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if self.mode == "v2":
                    nn.init.normal_(m.weight, mean=0.0, std=0.01)
                    nn.init.zeros_(m.bias)
                else:
                    m.reset_parameters()
            elif m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, rates={self.rates}"

    def forward(self, x: Tensor) -> Tensor:
        check_shape(x, "B,C,H,W", "x", C=self.in_channels)
        if self.mode == "v2":
            return aspp_v2(x, [c.weight for c in self.convs], [c.bias for c in self.convs], self.rates)

        outs = [self.convs[0](x)]
        for rate, branch in zip(self.rates, self.convs[1:-1]):
            conv, norm, act = branch
            outs.append(act(norm(atrous_conv2d(x, conv.weight, None, rate))))
        pool = self.convs[-1]
        pooled = pool[3](pool[2](pool[1](x.mean(dim=(2, 3), keepdim=True))))  # (B, C_out, 1, 1)

        proj_conv, proj_norm, proj_act, proj_drop = self.project
        n = len(outs) * self.out_channels
        w = proj_conv.weight
        y = F.conv2d(torch.cat(outs, dim=1), w[:, :n])
        y = y + F.conv2d(pooled, w[:, n:])  # the pooled branch's share, broadcast over H x W
        return proj_drop(proj_act(proj_norm(y)))


def _norm_reference(norm: nn.Module, x: Tensor) -> Tensor:
    """``norm`` (BatchNorm2d or FrozenBatchNorm2d) written out with its tensors."""
    if isinstance(norm, nn.BatchNorm2d):
        return F.batch_norm(
            x, norm.running_mean, norm.running_var, norm.weight, norm.bias,
            training=norm.training, momentum=0.0, eps=norm.eps,
        )
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    return (x - norm.running_mean[:, None, None]) * scale[:, None, None] + norm.bias[:, None, None]


def aspp_reference(module: ASPP, x: Tensor) -> Tensor:
    """Plain re-computation of ``module(x)`` with its tensors: a loop over branches of full
    ``F.conv2d`` calls, bilinear upsampling of the pooled branch, concatenation, projection.

    BatchNorm follows the module's training flag (batch statistics in training, running statistics
    in eval) but does not update the running statistics. Dropout is applied in training like the
    module's (pass ``dropout=0`` to compare training-mode outputs).
    """
    check_shape(x, "B,C,H,W", "x", C=module.in_channels)
    if module.mode == "v2":
        return aspp_v2_reference(x, [c.weight for c in module.convs], [c.bias for c in module.convs], module.rates)
    outs = []
    conv, norm, _ = module.convs[0]
    outs.append(F.relu(_norm_reference(norm, F.conv2d(x, conv.weight))))
    for rate, (conv, norm, _) in zip(module.rates, module.convs[1:-1]):
        outs.append(F.relu(_norm_reference(norm, F.conv2d(x, conv.weight, padding=rate, dilation=rate))))
    _, conv, norm, _ = module.convs[-1]
    pooled = F.relu(_norm_reference(norm, F.conv2d(F.adaptive_avg_pool2d(x, 1), conv.weight)))
    outs.append(F.interpolate(pooled, size=x.shape[-2:], mode="bilinear", align_corners=False))
    conv, norm, _, drop = module.project
    y = F.relu(_norm_reference(norm, F.conv2d(torch.cat(outs, dim=1), conv.weight)))
    return F.dropout(y, drop.p, training=module.training)
