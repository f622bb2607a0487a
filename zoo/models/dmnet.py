"""DMNet: Dynamic Multi-scale Filters for Semantic Segmentation (He, Deng, Qiao; ICCV 2019).

Paper: https://openaccess.thecvf.com/content_ICCV_2019/papers/He_Dynamic_Multi-Scale_Filters_for_Semantic_Segmentation_ICCV_2019_paper.pdf
Reference implementation (read, not copied): open-mmlab/mmsegmentation ``configs/_base_/models/
dmnet_r50-d8.py``, ``mmseg/models/decode_heads/{dm_head,fcn_head,decode_head}.py``,
``mmseg/models/backbones/resnet.py`` (``ResNetV1c``).

Architecture (mmseg's, which published the weights):
- backbone: ResNetV1c-D8 = ResNet-50/101 with the "deep stem" (three 3x3 convs 3->32 (stride 2)
  ->32->64, each + BN + ReLU, instead of the 7x7 conv) and max-pool 3/2/1, stride on the 3x3 conv of
  a bottleneck ("pytorch" style), layer3 / layer4 unstrided with dilation 2 / 4 and
  ``contract_dilation`` (first block of layer3 at dilation 1, of layer4 at 2): zoo's
  :class:`~zoo.layers.resnet.ResNet` at output stride 8, whose first-block rule is the same, with the
  stem replaced (:class:`ResNetV1c`, which overrides ``ResNet.stem``; the convs live in ``deep_stem``);
- decode head (:class:`DMHead`): one :class:`zoo.ops.dmnet.DynamicConvModule` per filter size
  (1, 3, 5, 7) on layer4 (2048 -> 512 each, no fusion conv as the released configs), concatenated with
  the input (2048 + 4 * 512) -> ``bottleneck`` 3x3 conv 512 + BN + ReLU -> Dropout2d(0.1) -> 1x1
  ``conv_seg``;
- auxiliary head (:class:`FCNHead`, training only): layer3 (1024) -> 3x3 conv 256 + BN + ReLU ->
  Dropout2d(0.1) -> 1x1 ``conv_seg`` (mmseg loss weight 0.4).

Outputs: eval mode returns the decode-head logits at 1/8 resolution (B, K, ceil(H/8), ceil(W/8)) (mmseg
resizes them to the image with bilinear, align_corners=False: zoo's segmentation postprocess does the
same); training mode returns ``{"out": logits, "aux": aux_logits}``.

State-dict keys are mmseg's (``backbone.layerL.i.*``, ``decode_head.dcm_modules.i.*``,
``decode_head.bottleneck.{conv,bn}``, ``decode_head.conv_seg``, ``auxiliary_head.convs.0.{conv,bn}``,
``auxiliary_head.conv_seg``) except the stem, ``backbone.deep_stem.N`` for mmseg's ``backbone.stem.N``
(``ResNet.stem`` is a method); see ``zoo.converters.mmseg_dmnet``. mmseg trains with SyncBN; zoo uses
``nn.BatchNorm2d`` (``norm``) -- same parameters and buffers.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from zoo.archs import register_arch
from zoo.layers import (RESNET_DEPTHS, BaseDecodeHead, Bottleneck, ConvModule, EncoderDecoder, FCNHead, NormSpec, ResNet,
                        make_norm)
from zoo.ops._checks import check_shape
from zoo.ops.dmnet import DynamicConvModule

__all__ = ["DMHead", "DMNet", "ResNetV1c", "dmnet"]

DMNet = EncoderDecoder  # backbone -> DMHead, auxiliary FCNHead in training


class DMHead(BaseDecodeHead):
    """mmseg ``DMHead``: [x, DCM_k(x) for k in filter_sizes] -> 3x3 bottleneck -> dropout -> conv_seg.

    (B, in_channels, h, w) -> (B, num_classes, h, w).
    """

    def __init__(self, in_channels: int = 2048, channels: int = 512, num_classes: int = 150,
                 filter_sizes: Sequence[int] = (1, 3, 5, 7), fusion: bool = False, dropout: float = 0.1,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__(channels, num_classes, dropout)
        if not filter_sizes:
            raise ValueError("DMHead needs at least one filter size")
        self.in_channels, self.filter_sizes = in_channels, tuple(filter_sizes)
        self.dcm_modules = nn.ModuleList(DynamicConvModule(in_channels, channels, k, fusion=fusion)
                                         for k in self.filter_sizes)
        self.bottleneck = ConvModule(in_channels + len(self.filter_sizes) * channels, channels, 3, padding=1,
                                     norm_layer=norm_layer)

    def forward(self, x: Tensor) -> Tensor:
        check_shape(x, "B,C,H,W", "x", C=self.in_channels)
        outs = torch.cat([x] + [dcm(x) for dcm in self.dcm_modules], dim=1)
        return self.cls_seg(self.bottleneck(outs))


class ResNetV1c(ResNet):
    """mmseg ``ResNetV1c``: zoo's :class:`ResNet` with the deep stem (three 3x3 convs, 32-32-64
    channels, the first with stride 2, each + norm + ReLU) in ``deep_stem`` instead of conv1/bn1.

    Every other option is :class:`ResNet`'s (the stem is swapped by overriding ``ResNet.stem``).
    """

    def __init__(self, block, layers: Sequence[int], *, stem_channels: int = 64, norm: NormSpec = "bn",
                 **kwargs) -> None:
        super().__init__(block, layers, norm=norm, **kwargs)
        if stem_channels != 64:
            raise ValueError(f"ResNetV1c: layer1 expects 64 stem channels (zoo's ResNet), got {stem_channels}")
        norm_layer = make_norm(norm)
        del self.conv1, self.bn1
        half = stem_channels // 2
        self.deep_stem = nn.Sequential(
            nn.Conv2d(3, half, 3, stride=2, padding=1, bias=False), norm_layer(half), nn.ReLU(inplace=True),
            nn.Conv2d(half, half, 3, padding=1, bias=False), norm_layer(half), nn.ReLU(inplace=True),
            nn.Conv2d(half, stem_channels, 3, padding=1, bias=False), norm_layer(stem_channels),
            nn.ReLU(inplace=True),
        )
        for m in self.deep_stem.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def stem(self, x: Tensor) -> Tensor:
        """The deep stem (stride 2, 64 channels; feature index 0). The max-pool belongs to layer1's input."""
        return self.deep_stem(x)


@register_arch("dmnet")
def dmnet(
    *,
    depth: int = 50,
    num_classes: int = 150,
    filter_sizes: Sequence[int] = (1, 3, 5, 7),
    channels: int = 512,
    fusion: bool = False,
    dropout: float = 0.1,
    aux: bool = True,
    norm: NormSpec = "bn",
) -> DMNet:
    """mmseg DMNet ``dmnet_r{50,101}-d8`` (ADE20K: 150 classes; Cityscapes configs use 19)."""
    if depth not in (50, 101, 152):
        raise ValueError(f"DMNet depth must be 50, 101 or 152 (ResNetV1c bottleneck), got {depth}")
    norm_layer = make_norm(norm)
    backbone = ResNetV1c(Bottleneck, RESNET_DEPTHS[depth][1], output_stride=8, norm=norm, features_only=True,
                         out_indices=(3, 4) if aux else (4,))
    c3, c4 = backbone.feature_channels[3], backbone.feature_channels[4]
    head = DMHead(c4, channels, num_classes, filter_sizes, fusion, dropout, norm_layer)
    aux_head = FCNHead(c3, 256, num_classes, dropout, norm_layer) if aux else None
    return DMNet(backbone, head, aux_head)
