"""Dilated ResNet backbones (torchvision layout), shared by the segmentation, detection, saliency and
classification families.

Paper: He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016,
https://arxiv.org/abs/1512.03385; dilation as in DeepLab (https://arxiv.org/abs/1606.00915) and
DeepLab v3 multi-grid (https://arxiv.org/abs/1706.05587).

Module layout and state-dict keys are torchvision's (``conv1``, ``bn1``, ``layer1..4.i.{conv1..3,
bn1..3, downsample.0/1}``, ``fc``), so torchvision ResNet checkpoints load unchanged.

Options and interpretation choices:
- ``output_stride`` 32, 16 or 8 replaces the stride of layer4 (16) or layer3 and layer4 (8) by
  dilation, as torchvision's ``replace_stride_with_dilation``. ``dilate_first_block=False``
  (torchvision): the first block of a dilated stage keeps the previous stage's dilation (layer3: 1, 2,
  2, ...; layer4: 2, 4, 4 at output stride 8). ``True`` (Caffe DeepLab v2 / kazuto1011): every block
  of the stage uses the stage's dilation (layer3: 2, 2, ...; layer4: 4, 4, 4).
- ``multi_grid`` (DeepLab v3): per-block factors for layer4; block i uses
  ``stage_dilation * multi_grid[i]`` (this overrides the first-block rule). (1, 2, 4) at output
  stride 16 gives rates 2, 4, 8.
- ``stride_in_1x1=True`` puts the stride of a bottleneck on its first 1x1 conv (MSRA/Caffe ResNet, as
  used by DeepLab v2) instead of the 3x3 conv (torchvision, "ResNet v1.5").
- ``pool_ceil_mode=True`` uses ``ceil_mode`` in the stem max-pool (Caffe DeepLab v2; 513 -> 65 at
  output stride 8 either way for odd sizes, different for even sizes).
- ``conv2_factory(stage=, block=, in_channels=, out_channels=, stride=, dilation=)`` builds the second
  conv of a block (the 3x3 of a bottleneck) for stage 1..4 and block 0..n-1; returning None keeps the
  plain ``nn.Conv2d``. Deformable ConvNets swap conv2 this way; the module is stored as ``conv2``.
  :func:`dcn_conv2_factory` is the one for deformable convolution (``zoo.ops.deform_conv``) in chosen
  stages, shared by the mmdet R-CNN and the Deformable-ConvNets R-FCN families.
- ``norm``: "bn" (``nn.BatchNorm2d``), "frozen_bn" (``torchvision.ops.FrozenBatchNorm2d``) or a
  callable ``num_features -> nn.Module``.
- ``features_only=True`` drops avgpool and fc and returns the list of feature maps ``out_indices``
  (0: stem after ReLU, stride 2; 1..4: layer1..4).
- ``width`` multiplies the channels of the stem and of every stage (64, 128, 256, 512 planes x width,
  rounded); 1.0 is the standard ResNet. zoo's ``-small`` entries use it for CPU-trained weights.
- BasicBlock (ResNet-18/34) accepts dilation (both 3x3 convs dilated, DRN-style), unlike torchvision.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from zoo.layers.norm import NormSpec, make_norm
from zoo.checks import check_shape
from zoo.ops.deform_conv import DeformConv2d, ModulatedDeformConv2d

__all__ = ["BasicBlock", "Bottleneck", "Conv2Factory", "RESNET_DEPTHS", "ResNet", "dcn_conv2_factory", "freeze_stages",
           "resnet", "resnet_depth"]

Conv2Factory = Callable[..., nn.Module | None]

#: depth -> (block kind, blocks per stage layer1..layer4)
RESNET_DEPTHS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


def _conv2(
    factory: Conv2Factory | None, stage: int, block: int, in_ch: int, out_ch: int, stride: int, dilation: int
) -> nn.Module:
    conv = None
    if factory is not None:
        conv = factory(
            stage=stage, block=block, in_channels=in_ch, out_channels=out_ch, stride=stride, dilation=dilation
        )
    if conv is None:
        conv = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
    return conv


def init_conv_and_norm(module: nn.Module) -> None:
    """He init (fan_out, ReLU) of every Conv2d in ``module``; BatchNorm / GroupNorm weight 1, bias 0 (the
    torchvision ResNet and fyu/drn initialisation)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class BasicBlock(nn.Module):
    """Two 3x3 convs (stride on the first) + identity or projection shortcut (torchvision keys)."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        dilation: int = 1,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        *,
        stride_in_1x1: bool = False,
        conv2_factory: Conv2Factory | None = None,
        stage: int = 0,
        block: int = 0,
    ) -> None:
        super().__init__()
        del stride_in_1x1  # a basic block has no 1x1 conv
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv2(conv2_factory, stage, block, planes, planes, 1, dilation)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 -> 1x1 expand (x4) + shortcut; stride on the 3x3 (torchvision) or on the
    first 1x1 (``stride_in_1x1``, MSRA/Caffe)."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        dilation: int = 1,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        *,
        stride_in_1x1: bool = False,
        conv2_factory: Conv2Factory | None = None,
        stage: int = 0,
        block: int = 0,
    ) -> None:
        super().__init__()
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=s1, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = _conv2(conv2_factory, stage, block, planes, planes, s3, dilation)
        self.bn2 = norm_layer(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet with torchvision's layout, dilation for output stride 8/16, MSRA stride placement,
    multi-grid, a conv2 hook and feature-map output (see the module docstring).

    Input (B, 3, H, W). Output: (B, num_classes) logits, or with ``features_only`` a list of
    feature maps, one per ``out_indices`` entry (channels ``self.feature_channels[i]``).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        *,
        num_classes: int = 1000,
        output_stride: int = 32,
        dilate_first_block: bool = False,
        multi_grid: Sequence[int] | None = None,
        stride_in_1x1: bool = False,
        pool_ceil_mode: bool = False,
        conv2_factory: Conv2Factory | None = None,
        norm: NormSpec = "bn",
        features_only: bool = False,
        out_indices: Sequence[int] = (1, 2, 3, 4),
        zero_init_residual: bool = False,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        if not width > 0:
            raise ValueError(f"width must be positive, got {width}")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        if len(layers) != 4:
            raise ValueError(f"layers must give the number of blocks of the 4 stages, got {layers}")
        if multi_grid is not None and len(multi_grid) != layers[3]:
            raise ValueError(f"multi_grid needs one factor per layer4 block ({layers[3]}), got {tuple(multi_grid)}")
        if features_only and (not out_indices or any(i not in range(5) for i in out_indices)):
            raise ValueError(f"out_indices must be a non-empty subset of 0..4, got {tuple(out_indices)}")
        norm_layer = make_norm(norm)
        self.output_stride = output_stride
        self.features_only = features_only
        self.out_indices = tuple(out_indices)

        planes_per_stage = tuple(max(1, round(p * width)) for p in (64, 128, 256, 512))
        self.inplanes = planes_per_stage[0]
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=pool_ceil_mode)

        dilate = {32: (False, False, False), 16: (False, False, True), 8: (False, True, True)}[output_stride]
        dilation = 1
        stages = []
        for stage, (planes, n, stride) in enumerate(zip(planes_per_stage, layers, (1, 2, 2, 2)), start=1):
            previous = dilation
            if stage > 1 and dilate[stage - 2]:
                dilation *= stride
                stride = 1
            grid = multi_grid if stage == 4 and multi_grid is not None else None
            if grid is not None:
                dilations = [dilation * g for g in grid]
            else:
                dilations = [dilation if dilate_first_block else previous] + [dilation] * (n - 1)
            stages.append(
                self._make_layer(block, planes, stride, dilations, norm_layer, stride_in_1x1, conv2_factory, stage)
            )
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        del self.inplanes
        self.feature_channels = (planes_per_stage[0],) + tuple(p * block.expansion for p in planes_per_stage)

        if not features_only:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(planes_per_stage[3] * block.expansion, num_classes)

        init_conv_and_norm(self)
        if zero_init_residual:
            for m in self.modules():
                last = m.bn3 if isinstance(m, Bottleneck) else m.bn2 if isinstance(m, BasicBlock) else None
                if isinstance(getattr(last, "weight", None), torch.Tensor):
                    nn.init.zeros_(last.weight)

    def _make_layer(self, block, planes, stride, dilations, norm_layer, stride_in_1x1, conv2_factory, stage):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                norm_layer(planes * block.expansion),
            )
        blocks = []
        for i, d in enumerate(dilations):
            blocks.append(
                block(
                    self.inplanes, planes, stride if i == 0 else 1, downsample if i == 0 else None, d, norm_layer,
                    stride_in_1x1=stride_in_1x1, conv2_factory=conv2_factory, stage=stage, block=i,
                )
            )
            self.inplanes = planes * block.expansion
        return nn.Sequential(*blocks)

    def stem(self, x: Tensor) -> Tensor:
        """conv1 -> bn1 -> ReLU (stride 2; feature index 0). The max-pool belongs to layer1's input."""
        return self.relu(self.bn1(self.conv1(x)))

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        check_shape(x, "B,C,H,W", "x", C=3)
        x = self.stem(x)
        feats = [x]
        last = max(self.out_indices) if self.features_only else 4
        for i, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4), start=1):
            if i > last:
                break
            x = layer(self.maxpool(x) if i == 1 else x)
            feats.append(x)
        if self.features_only:
            return [feats[i] for i in self.out_indices]
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet_depth(backbone: str, kinds: Sequence[str] = ("basic", "bottleneck")) -> int:
    """The depth of a backbone name ``"resnet50"`` -> 50; ValueError naming the choices (those of ``kinds``)."""
    depth = int(backbone[len("resnet"):]) if backbone.startswith("resnet") and backbone[len("resnet"):].isdigit() else None
    if depth not in RESNET_DEPTHS or RESNET_DEPTHS[depth][0] not in kinds:
        choices = [f"resnet{d}" for d, (kind, _) in RESNET_DEPTHS.items() if kind in kinds]
        raise ValueError(f"backbone must be one of {choices}, got {backbone!r}")
    return depth


def resnet(
    *,
    depth: int = 50,
    num_classes: int = 1000,
    output_stride: int = 32,
    dilate_first_block: bool = False,
    multi_grid: Sequence[int] | None = None,
    stride_in_1x1: bool = False,
    pool_ceil_mode: bool = False,
    conv2_factory: Conv2Factory | None = None,
    norm: NormSpec = "bn",
    features_only: bool = False,
    out_indices: Sequence[int] = (1, 2, 3, 4),
    zero_init_residual: bool = False,
    width: float = 1.0,
) -> ResNet:
    """ResNet-18/34/50/101/152 with random init; every option as :class:`ResNet`."""
    if depth not in RESNET_DEPTHS:
        raise ValueError(f"ResNet depth must be one of {sorted(RESNET_DEPTHS)}, got {depth}")
    kind, layers = RESNET_DEPTHS[depth]
    return ResNet(
        BasicBlock if kind == "basic" else Bottleneck,
        layers,
        num_classes=num_classes,
        output_stride=output_stride,
        dilate_first_block=dilate_first_block,
        multi_grid=multi_grid,
        stride_in_1x1=stride_in_1x1,
        pool_ceil_mode=pool_ceil_mode,
        conv2_factory=conv2_factory,
        norm=norm,
        features_only=features_only,
        out_indices=out_indices,
        zero_init_residual=zero_init_residual,
        width=width,
    )


def freeze_stages(body: ResNet, trainable_layers: int) -> ResNet:
    """Freeze all but the last ``trainable_layers`` of (stem, layer1, ..., layer4) in place, as
    torchvision's ``trainable_layers`` (5 = everything trains; mmdet's ``frozen_stages=1`` is 3)."""
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers must be in 0..5, got {trainable_layers}")
    trainable = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        trainable.append("bn1")
    for name, param in body.named_parameters():
        if not any(name.startswith(prefix) for prefix in trainable):
            param.requires_grad_(False)
    return body


def dcn_conv2_factory(kind: str, stages: Sequence[int] = (2, 3, 4), deform_groups: int = 1) -> Conv2Factory:
    """A ResNet ``conv2_factory`` making conv2 of every block of ``stages`` a deformable conv.

    kind "dcn" -> :class:`DeformConv2d` (v1), "mdcn" -> :class:`ModulatedDeformConv2d` (v2); 3x3, the
    block's stride and dilation, padding = dilation, no bias (mmdet's Bottleneck; Deformable-ConvNets'
    res5 ``DeformableConvolution(..., no_bias=True)``), ``deform_groups`` offset fields; keys
    ``layer{stage}.{block}.conv2.weight`` and ``conv2.conv_offset.{weight,bias}``.
    """
    if kind not in ("dcn", "mdcn"):
        raise ValueError(f"dcn must be None, 'dcn' or 'mdcn', got {kind!r}")
    bad = [s for s in stages if s not in (1, 2, 3, 4)]
    if bad:
        raise ValueError(f"dcn_stages must be ResNet stages 1..4 (layer1..layer4), got {list(stages)}")
    cls = DeformConv2d if kind == "dcn" else ModulatedDeformConv2d
    stages = tuple(stages)

    def factory(*, stage: int, block: int, in_channels: int, out_channels: int, stride: int,
                dilation: int) -> nn.Module | None:
        del block
        if stage not in stages:
            return None
        return cls(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation,
                   deform_groups=deform_groups, bias=False)

    return factory
