"""EfficientNet-CondConv (CondConv-EfficientNet-B0/B1) image classifiers.

Paper: Yang, Bender, Le, Ngiam, "CondConv: Conditionally Parameterized Convolutions for Efficient
Inference", NeurIPS 2019 (https://arxiv.org/abs/1904.04971). Reference implementations (read, not copied):
tensorflow/tpu ``models/official/efficientnet/condconv`` and timm's ``tf_efficientnet_cc_b0_4e`` /
``_b0_8e`` / ``_b1_8e`` (``timm/models/efficientnet.py`` ``_gen_efficientnet_condconv``,
``_efficientnet_blocks.py`` ``CondConvResidual``), whose ImageNet weights convert with the
``timm-efficientnet-cc`` converter.

Architecture (EfficientNet-B0 stages; B1 = depth multiplier 1.1, repeats ``ceil(r * 1.1)``):
stem 3x3/2 conv 3->32 + BN + SiLU; 7 stages of (expand, kernel, stride, out, repeats)
(1,3,1,16,1) depthwise-separable, (6,3,2,24,2), (6,5,2,40,2), (6,3,2,80,3), (6,5,1,112,3),
(6,5,2,192,4), (6,3,1,320,1) MBConv blocks with squeeze-excitation (reduce to
``round(block_in * 0.25)``, SiLU, sigmoid gate); head 1x1 conv 320->1280 + BN + SiLU, global average
pool, dropout, ``classifier`` Linear. Only the last three stages use CondConv: each of their blocks has
ONE routing ``r = sigmoid(Linear(GAP(x_block_in)))`` (:class:`zoo.ops.cond_conv.CondConvRouting`),
shared by its expansion, depthwise and projection :class:`zoo.ops.cond_conv.CondConv2d` (E experts;
"4e"/"8e" = 4/8). BN eps 1e-3 (TensorFlow), SiLU everywhere, residual when stride 1 and in == out.

Padding: ``tf_same_padding=True`` (default, as timm's ``tf_`` ports of the TensorFlow weights) pads
strided convs TensorFlow-"SAME" style: total padding ``max((ceil(i/s) - 1) * s + (k - 1) * d + 1 - i, 0)``
per axis, the odd pixel at the bottom/right, computed from the input size in ``forward``
(:class:`TFSamePad`); stride-1 odd-kernel convs pad symmetrically ``(k - 1) // 2`` (identical to SAME).
``False`` pads every conv symmetrically (PyTorch style, timm's non-``tf_`` variants).

Module names are timm's (``conv_stem``, ``bn1``, ``blocks.S.i.{conv_pw, bn1, conv_dw, bn2, se.conv_reduce,
se.conv_expand, conv_pwl, bn3}``, ``conv_head``, ``bn2``, ``classifier``) except the routing,
``blocks.S.i.routing.fc`` (timm ``routing_fn``). Input (B, 3, H, W) -> logits (B, num_classes).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import StochasticDepth

from zoo.archs import register_arch
from zoo.ops._checks import check_shape
from zoo.ops.cond_conv import CondConv2d, CondConvRouting

__all__ = ["EfficientNetCC", "TFSamePad", "efficientnet_cc", "STAGES"]

# (block kind, expand ratio, kernel, stride, out channels, repeats, uses CondConv) of EfficientNet-B0
STAGES: tuple[tuple[str, int, int, int, int, int, bool], ...] = (
    ("ds", 1, 3, 1, 16, 1, False),
    ("ir", 6, 3, 2, 24, 2, False),
    ("ir", 6, 5, 2, 40, 2, False),
    ("ir", 6, 3, 2, 80, 3, False),
    ("ir", 6, 5, 1, 112, 3, True),
    ("ir", 6, 5, 2, 192, 4, True),
    ("ir", 6, 3, 1, 320, 1, True),
)


def _make_divisible(v: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor``, never below 90% of ``v`` (EfficientNet rule)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


class TFSamePad(nn.Module):
    """TensorFlow "SAME" padding for a conv of ``kernel_size`` / ``stride`` / ``dilation``: pads
    (B, C, H, W) so that the conv (padding 0) outputs ceil(H / s) x ceil(W / s); the extra pixel of an
    odd total goes to the bottom/right. Reads only the input's shape (no host sync)."""

    def __init__(self, kernel_size: int, stride: int, dilation: int = 1) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation

    def _amount(self, size: int) -> int:
        out = -(-size // self.stride)
        return max((out - 1) * self.stride + (self.kernel_size - 1) * self.dilation + 1 - size, 0)

    def forward(self, x: Tensor) -> Tensor:
        ph, pw = self._amount(x.shape[-2]), self._amount(x.shape[-1])
        return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, dilation={self.dilation}"


def _padding(kernel: int, stride: int, tf_same: bool) -> tuple[nn.Module, int]:
    """(pad module, conv padding): TF-SAME for strided convs when ``tf_same``, else symmetric k // 2."""
    if tf_same and stride > 1:
        return TFSamePad(kernel, stride), 0
    return nn.Identity(), (kernel - 1) // 2


class _BNAct(nn.BatchNorm2d):
    """BatchNorm (eps 1e-3 for the TF weights) followed by SiLU (``act=True``) or nothing; the state-dict
    keys of a plain ``nn.BatchNorm2d`` (timm's ``BatchNormAct2d``)."""

    def __init__(self, channels: int, eps: float, act: bool) -> None:
        super().__init__(channels, eps=eps)
        self.act = nn.SiLU(inplace=True) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(super().forward(x))


class SqueezeExcite(nn.Module):
    """x * sigmoid(conv_expand(SiLU(conv_reduce(GAP(x))))), 1x1 convs with bias; (B, C, H, W) -> same."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced, 1)
        self.act1 = nn.SiLU(inplace=True)
        self.conv_expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        s = self.conv_expand(self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(s)


class DepthwiseSeparable(nn.Module):
    """Stage-1 block: depthwise kxk + BN + SiLU, SE, pointwise 1x1 + BN, residual if stride 1 and in == out."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, se_ratio: float, eps: float,
                 tf_same: bool, drop_path: float) -> None:
        super().__init__()
        self.has_skip = stride == 1 and in_ch == out_ch
        self.pad_dw, pad = _padding(kernel, stride, tf_same)
        self.conv_dw = nn.Conv2d(in_ch, in_ch, kernel, stride, pad, groups=in_ch, bias=False)
        self.bn1 = _BNAct(in_ch, eps, act=True)
        self.se = SqueezeExcite(in_ch, max(1, round(in_ch * se_ratio)))
        self.conv_pw = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.bn2 = _BNAct(out_ch, eps, act=False)
        self.drop_path = StochasticDepth(drop_path, "row")

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv_pw(self.se(self.bn1(self.conv_dw(self.pad_dw(x))))))
        return self.drop_path(y) + x if self.has_skip else y


class InvertedResidual(nn.Module):
    """MBConv: 1x1 expand + BN + SiLU, depthwise kxk + BN + SiLU, SE, 1x1 project + BN (+ residual).

    With ``num_experts > 0`` the three convs are :class:`CondConv2d` sharing one routing
    ``self.routing`` computed on the block input (CondConv's per-block routing, timm ``CondConvResidual``).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int, se_ratio: float,
                 eps: float, tf_same: bool, drop_path: float, num_experts: int = 0) -> None:
        super().__init__()
        mid = _make_divisible(in_ch * expand)
        self.has_skip = stride == 1 and in_ch == out_ch
        self.num_experts = num_experts
        self.pad_dw, pad = _padding(kernel, stride, tf_same)

        def conv(i: int, o: int, k: int, s: int = 1, p: int = 0, g: int = 1) -> nn.Module:
            if num_experts > 0:
                return CondConv2d(i, o, k, s, p, groups=g, num_experts=num_experts)
            return nn.Conv2d(i, o, k, s, p, groups=g, bias=False)

        self.conv_pw = conv(in_ch, mid, 1)
        self.bn1 = _BNAct(mid, eps, act=True)
        self.conv_dw = conv(mid, mid, kernel, stride, pad, mid)
        self.bn2 = _BNAct(mid, eps, act=True)
        self.se = SqueezeExcite(mid, max(1, round(mid * se_ratio / expand)))
        self.conv_pwl = conv(mid, out_ch, 1)
        self.bn3 = _BNAct(out_ch, eps, act=False)
        self.drop_path = StochasticDepth(drop_path, "row")
        self.routing = CondConvRouting(in_ch, num_experts) if num_experts > 0 else None

    def forward(self, x: Tensor) -> Tensor:
        if self.routing is not None:
            r = self.routing(x)
            y = self.bn1(self.conv_pw(x, r))
            y = self.bn2(self.conv_dw(self.pad_dw(y), r))
            y = self.bn3(self.conv_pwl(self.se(y), r))
        else:
            y = self.bn2(self.conv_dw(self.pad_dw(self.bn1(self.conv_pw(x)))))
            y = self.bn3(self.conv_pwl(self.se(y)))
        return self.drop_path(y) + x if self.has_skip else y


class EfficientNetCC(nn.Module):
    """EfficientNet with CondConv blocks in the stages flagged in :data:`STAGES` (see module docstring).

    Input (B, 3, H, W) -> (B, num_classes) logits.
    """

    def __init__(self, *, num_experts: int = 4, depth_multiplier: float = 1.0, width_multiplier: float = 1.0,
                 num_classes: int = 1000, dropout: float = 0.2, drop_path_rate: float = 0.0,
                 se_ratio: float = 0.25, bn_eps: float = 1e-3, tf_same_padding: bool = True,
                 stages: Sequence[tuple[str, int, int, int, int, int, bool]] = STAGES) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        if depth_multiplier <= 0 or width_multiplier <= 0:
            raise ValueError("depth_multiplier and width_multiplier must be > 0")
        if not 0.0 <= dropout < 1.0 or not 0.0 <= drop_path_rate < 1.0:
            raise ValueError("dropout and drop_path_rate must be in [0, 1)")
        ch = lambda c: _make_divisible(c * width_multiplier)  # noqa: E731
        stem = ch(32)
        self.stem_pad, pad = _padding(3, 2, tf_same_padding)
        self.conv_stem = nn.Conv2d(3, stem, 3, 2, pad, bias=False)
        self.bn1 = _BNAct(stem, bn_eps, act=True)

        repeats = [int(math.ceil(s[5] * depth_multiplier)) for s in stages]
        total, index = sum(repeats), 0
        blocks, in_ch = [], stem
        for (kind, expand, kernel, stride, out, _, cc), n in zip(stages, repeats):
            out = ch(out)
            stage = []
            for i in range(n):
                dp = drop_path_rate * index / total
                s = stride if i == 0 else 1
                if kind == "ds":
                    stage.append(DepthwiseSeparable(in_ch, out, kernel, s, se_ratio, bn_eps, tf_same_padding, dp))
                else:
                    stage.append(InvertedResidual(in_ch, out, kernel, s, expand, se_ratio, bn_eps, tf_same_padding,
                                                  dp, num_experts if cc else 0))
                in_ch, index = out, index + 1
            blocks.append(nn.Sequential(*stage))
        self.blocks = nn.Sequential(*blocks)
        self.num_features = ch(1280)
        self.conv_head = nn.Conv2d(in_ch, self.num_features, 1, bias=False)
        self.bn2 = _BNAct(self.num_features, bn_eps, act=True)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, num_features, H/32, W/32) before pooling."""
        check_shape(x, "B,C,H,W", "x", C=3)
        x = self.bn1(self.conv_stem(self.stem_pad(x)))
        return self.bn2(self.conv_head(self.blocks(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.dropout(self.forward_features(x).mean((2, 3))))


@register_arch("efficientnet_cc")
def efficientnet_cc(*, variant: str = "b0", num_experts: int = 4, num_classes: int = 1000, dropout: float = 0.2,
                    drop_path_rate: float = 0.0, tf_same_padding: bool = True) -> EfficientNetCC:
    """CondConv-EfficientNet ``variant`` "b0" (depth 1.0) or "b1" (depth 1.1) with ``num_experts`` experts
    in the last three stages, random init. ``dropout`` before the classifier (paper training: 0.2),
    ``drop_path_rate`` stochastic depth (timm's linear rule over blocks)."""
    depth = {"b0": 1.0, "b1": 1.1}
    if variant not in depth:
        raise ValueError(f"EfficientNet-CondConv variant must be one of {sorted(depth)}, got {variant!r}")
    return EfficientNetCC(num_experts=num_experts, depth_multiplier=depth[variant], num_classes=num_classes,
                          dropout=dropout, drop_path_rate=drop_path_rate, tf_same_padding=tf_same_padding)
