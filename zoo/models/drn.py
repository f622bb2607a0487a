"""Dilated Residual Networks (DRN-A/C/D) for classification and their segmentation wrapper.

Paper: Yu, Koltun, Funkhouser, "Dilated Residual Networks", CVPR 2017, https://arxiv.org/abs/1705.09914.
Reference code (read, not copied): fyu/drn ``drn.py`` (backbones) and ``segment.py`` (``DRNSeg``).

Layout and state-dict keys are fyu/drn's, so its checkpoints load with the ``fyu-drn`` converter, which
only renames the ``nn.Sequential`` indices of the segmentation wrapper and adds the
``num_batches_tracked`` counters the 2017 checkpoints lack:

- DRN-C: ``conv1`` (7x7/1, 3->16) + ``bn1`` + ReLU, then ``layer1..layer8`` of residual blocks
  (``layerL.i.{conv1,bn1,conv2,bn2[,conv3,bn3],downsample.0/1}``); levels 1-2 are BasicBlocks for every
  depth; levels 7-8 are BasicBlocks WITHOUT the residual addition (de-gridding).
- DRN-D: ``layer0`` = conv 7x7/1 + BN + ReLU (``layer0.0/1``); levels 1, 2, 7, 8 are plain
  conv3x3-BN-ReLU stacks (``layerL.{3j, 3j+1}``); levels 3-6 residual blocks.
- Channels (16, 32, 64, 128, 256, 512, 512, 512) (x4 for bottleneck levels 3-6); levels 2-4 have
  stride 2 (output stride 8); level 5 dilation 2, level 6 dilation 4, level 7 dilation 2, level 8
  dilation 1. Block rule (fyu ``_make_layer``): a level with dilation d builds its first block with
  (d // 2, d) only when it is a "new level" (it also changes resolution); fyu builds every dilated level
  with ``new_level=False``, so in every released DRN all blocks of a dilated level use (d, d), i.e.
  both 3x3 convs of a BasicBlock (the 3x3 of a Bottleneck) at dilation d. Bottlenecks put the stride
  on the 3x3 conv (torchvision "v1.5").
- DRN-A-50: ResNet-50 in torchvision's layout (``zoo.layers.resnet``) with layer3 / layer4 unstrided
  and dilated 2 / 4; as fyu ``DRN_A._make_layer``, the FIRST block of layer3 AND of layer4 keeps
  dilation 1 (fyu passes no dilation to it), the others use 2 / 4. Its classifier is the ResNet
  ``nn.Linear`` ``fc`` (fyu loads torchvision ResNet-50 keys into it).
- Classifier (C, D): global average pool, then ``fc`` = 1x1 conv (bias) -> (B, num_classes).
  Interpretation choice: fyu uses ``AvgPool2d(28)``, which is the global pool only at 224 x 224 input
  (28 x 28 feature map); zoo uses ``AdaptiveAvgPool2d(1)`` (same result at 224, any size accepted).

Building blocks come from ``zoo.layers`` (``BasicBlock``, ``Bottleneck``, ``ResNet``, the fixed bilinear
upsampling also used by DilationNet); the non-residual BasicBlock of DRN-C levels 7-8 subclasses ``BasicBlock``.

Segmentation (fyu ``DRNSeg``): ``base`` (the DRN without avgpool/fc) -> ``seg`` (1x1 conv, bias) ->
``up``, a depthwise ``ConvTranspose2d(k=16, stride=8, padding=4)`` with FIXED bilinear weights
(:class:`FixedBilinearUpsample`). ``forward`` returns the upsampled logits (B, K, 8h, 8w) = (B, K, H, W)
for H, W multiples of 8, in train and eval mode; fyu applies ``LogSoftmax`` on top for its NLL loss
(zoo returns logits: use ``CrossEntropyLoss``; the argmax is the same).

Feature maps (``features_only=True``): index 0 is the stem output (C: relu(bn1(conv1)); D: layer0),
1..8 the outputs of layer1..layer8, at strides 1, 1, 2, 4, 8, 8, 8, 8, 8; ``feature_channels[i]``
gives their widths. DRN-A returns the ResNet feature maps 0..4 (strides 2, 4, 8, 8, 8).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from zoo.archs import register_arch
from zoo.layers import BasicBlock, Bottleneck, FixedBilinearUpsample, NormSpec, ResNet, bilinear_kernel, make_norm, resnet
from zoo.layers.resnet import init_conv_and_norm
from zoo.ops._checks import check_shape

__all__ = ["DRN", "DRNSeg", "FixedBilinearUpsample", "NonResidualBasicBlock", "bilinear_kernel", "drn", "drn_seg",
           "DRN_CONFIGS"]

CHANNELS = (16, 32, 64, 128, 256, 512, 512, 512)
_LEVEL_DILATIONS = (1, 1, 1, 1, 2, 4, 2, 1)
_LEVEL_STRIDES = (1, 2, 2, 2, 1, 1, 1, 1)
FEATURE_STRIDES = (1, 1, 2, 4, 8, 8, 8, 8, 8)

# (variant, depth) -> (block of levels 3-6, blocks per level 1..8), as fyu/drn drn.py
DRN_CONFIGS: dict[tuple[str, int], tuple[str, tuple[int, ...]]] = {
    ("c", 26): ("basic", (1, 1, 2, 2, 2, 2, 1, 1)),
    ("c", 42): ("basic", (1, 1, 3, 4, 6, 3, 1, 1)),
    ("c", 58): ("bottleneck", (1, 1, 3, 4, 6, 3, 1, 1)),
    ("d", 22): ("basic", (1, 1, 2, 2, 2, 2, 1, 1)),
    ("d", 24): ("basic", (1, 1, 2, 2, 2, 2, 2, 2)),
    ("d", 38): ("basic", (1, 1, 3, 4, 6, 3, 1, 1)),
    ("d", 40): ("basic", (1, 1, 3, 4, 6, 3, 2, 2)),
    ("d", 54): ("bottleneck", (1, 1, 3, 4, 6, 3, 1, 1)),
    ("d", 56): ("bottleneck", (1, 1, 3, 4, 6, 3, 2, 2)),
    ("d", 105): ("bottleneck", (1, 1, 3, 4, 23, 3, 1, 1)),
    ("d", 107): ("bottleneck", (1, 1, 3, 4, 23, 3, 2, 2)),
}


class NonResidualBasicBlock(BasicBlock):
    """DRN-C level 7-8 block: conv-BN-ReLU-conv-BN-ReLU without the residual addition.

    A projection ``downsample`` is still built when the width changes (DRN-C-58: 2048 -> 512), as in
    fyu/drn, so its checkpoints load; fyu computes and discards it, zoo skips it (same output).
    """

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)))


class DRN(nn.Module):
    """DRN-C / DRN-D backbone and classifier with fyu/drn's module names (see the module docstring).

    Input (B, 3, H, W). Output: (B, num_classes) logits, or with ``features_only`` the list of feature
    maps ``out_indices`` (0 = stem, 1..8 = layer1..layer8).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        *,
        arch: str = "d",
        channels: Sequence[int] = CHANNELS,
        num_classes: int = 1000,
        norm: NormSpec = "bn",
        features_only: bool = False,
        out_indices: Sequence[int] = tuple(range(1, 9)),
    ) -> None:
        super().__init__()
        arch = arch.lower()
        if arch not in ("c", "d"):
            raise ValueError(f"DRN arch must be 'c' or 'd' (DRN-A is built by drn(variant='a')), got {arch!r}")
        if len(layers) != 8 or len(channels) != 8 or any(n < 1 for n in layers[:5]) or any(n < 0 for n in layers):
            raise ValueError(f"DRN needs 8 levels (levels 1-5 with >= 1 block), got layers={tuple(layers)}, "
                             f"channels={tuple(channels)}")
        if features_only and (not out_indices or any(i not in range(9) for i in out_indices)):
            raise ValueError(f"out_indices must be a non-empty subset of 0..8, got {tuple(out_indices)}")
        self.arch = arch
        self.norm_layer = make_norm(norm)
        self.features_only = features_only
        self.out_indices = tuple(out_indices)
        self.inplanes = channels[0]

        if arch == "c":
            self.conv1 = nn.Conv2d(3, channels[0], 7, stride=1, padding=3, bias=False)
            self.bn1 = self.norm_layer(channels[0])
            self.relu = nn.ReLU(inplace=True)
        else:
            self.layer0 = nn.Sequential(
                nn.Conv2d(3, channels[0], 7, stride=1, padding=3, bias=False),
                self.norm_layer(channels[0]),
                nn.ReLU(inplace=True),
            )
        widths = [channels[0]]
        for level in range(1, 9):
            n, planes = layers[level - 1], channels[level - 1]
            stride, dilation = _LEVEL_STRIDES[level - 1], _LEVEL_DILATIONS[level - 1]
            if n == 0:
                if level < 6:
                    raise AssertionError  # pragma: no cover (checked above)
                layer = None
            elif arch == "d" and level in (1, 2, 7, 8):
                layer = self._make_conv_layers(planes, n, stride, dilation)
            elif arch == "c" and level in (7, 8):
                layer = self._make_layer(NonResidualBasicBlock, planes, n, stride, dilation)
            else:
                layer = self._make_layer(BasicBlock if level <= 2 else block, planes, n, stride, dilation)
            setattr(self, f"layer{level}", layer)
            widths.append(self.inplanes if layer is not None else widths[-1])
        self.feature_channels = tuple(widths)
        self.out_dim = self.inplanes
        del self.inplanes

        if not features_only:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Conv2d(self.out_dim, num_classes, 1, bias=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """fyu/drn init: convs N(0, 2 / (k * k * out_channels)), norms weight 1 / bias 0, fc bias default."""
        init_conv_and_norm(self)

    def _make_layer(self, block, planes: int, blocks: int, stride: int, dilation: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                self.norm_layer(planes * block.expansion),
            )
        mods = []
        for i in range(blocks):
            mods.append(block(self.inplanes, planes, stride if i == 0 else 1, downsample if i == 0 else None,
                              dilation, self.norm_layer))
            self.inplanes = planes * block.expansion
        return nn.Sequential(*mods)

    def _make_conv_layers(self, channels: int, convs: int, stride: int, dilation: int) -> nn.Sequential:
        mods: list[nn.Module] = []
        for i in range(convs):
            mods += [
                nn.Conv2d(self.inplanes, channels, 3, stride=stride if i == 0 else 1, padding=dilation,
                          dilation=dilation, bias=False),
                self.norm_layer(channels),
                nn.ReLU(inplace=True),
            ]
            self.inplanes = channels
        return nn.Sequential(*mods)

    def stem(self, x: Tensor) -> Tensor:
        """Feature index 0: relu(bn1(conv1(x))) (C) or layer0(x) (D), stride 1, 16 channels."""
        return self.relu(self.bn1(self.conv1(x))) if self.arch == "c" else self.layer0(x)

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        check_shape(x, "B,C,H,W", "x", C=3)
        x = self.stem(x)
        feats = [x]
        last = max(self.out_indices) if self.features_only else 8
        for level in range(1, last + 1):
            layer = getattr(self, f"layer{level}")
            if layer is not None:
                x = layer(x)
            feats.append(x)
        if self.features_only:
            return [feats[i] for i in self.out_indices]
        return torch.flatten(self.fc(self.avgpool(x)), 1)


class DRNSeg(nn.Module):
    """fyu/drn ``DRNSeg``: DRN features (stride 8) -> 1x1 ``seg`` -> fixed bilinear x8 ``up``.

    Input (B, 3, H, W); output logits (B, num_classes, 8 * ceil(H / 8), 8 * ceil(W / 8)) -- the input
    size for multiples of 8 -- in train and eval mode (no LogSoftmax; see the module docstring).
    """

    def __init__(self, base: DRN, num_classes: int) -> None:
        super().__init__()
        if not base.features_only or base.out_indices != (8,):
            raise ValueError("DRNSeg needs a DRN built with features_only=True, out_indices=(8,)")
        self.base = base
        self.seg = nn.Conv2d(base.out_dim, num_classes, 1, bias=True)
        self.up = FixedBilinearUpsample(num_classes, 8)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``seg`` as fyu: weight N(0, 2 / num_classes), bias 0 (the backbone keeps its own init)."""
        nn.init.kaiming_normal_(self.seg.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.seg.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.up(self.seg(self.base(x)[-1]))


def _drn_a(num_classes: int, norm: NormSpec, features_only: bool, out_indices: Sequence[int] | None) -> ResNet:
    def first_blocks_undilated(*, stage: int, block: int, in_channels: int, out_channels: int, stride: int,
                               dilation: int) -> nn.Module | None:
        # fyu DRN_A: the first block of the dilated layer3 / layer4 keeps dilation 1
        if stage in (3, 4) and block == 0:
            return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        return None

    return resnet(depth=50, num_classes=num_classes, output_stride=8, conv2_factory=first_blocks_undilated,
                  norm=norm, features_only=features_only,
                  out_indices=tuple(out_indices) if out_indices is not None else (1, 2, 3, 4))


@register_arch("drn")
def drn(
    *,
    variant: str = "d",
    depth: int = 22,
    num_classes: int = 1000,
    norm: NormSpec = "bn",
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
) -> nn.Module:
    """DRN-A-50, DRN-C-26/42/58 or DRN-D-22/24/38/40/54/56/105/107 with random init (fyu/drn layout).

    ``out_indices`` (``features_only``): default 1..8 for C/D (0..8 allowed), 1..4 for A (0..4).
    """
    variant = variant.lower()
    if variant == "a":
        if depth != 50:
            raise ValueError(f"DRN-A exists with depth 50 only, got {depth}")
        return _drn_a(num_classes, norm, features_only, out_indices)
    if (variant, depth) not in DRN_CONFIGS:
        known = ", ".join(["drn-a-50"] + [f"drn-{v}-{d}" for v, d in DRN_CONFIGS])
        raise ValueError(f"unknown DRN variant/depth {variant!r}/{depth}; known: {known}")
    kind, layers = DRN_CONFIGS[(variant, depth)]
    return DRN(BasicBlock if kind == "basic" else Bottleneck, layers, arch=variant, num_classes=num_classes,
               norm=norm, features_only=features_only,
               out_indices=tuple(out_indices) if out_indices is not None else tuple(range(1, 9)))


@register_arch("drn_seg")
def drn_seg(*, variant: str = "d", depth: int = 22, num_classes: int = 19, norm: NormSpec = "bn") -> DRNSeg:
    """fyu/drn ``DRNSeg`` on DRN-C or DRN-D (Cityscapes: 19 classes)."""
    if variant.lower() == "a":
        raise ValueError("DRNSeg is defined for DRN-C and DRN-D (fyu/drn segment.py); got variant 'a'")
    base = drn(variant=variant, depth=depth, norm=norm, features_only=True, out_indices=(8,))
    return DRNSeg(base, num_classes)
