"""CaC-Net: context-adaptive convolution on a dilated ResNet (Liu, He, Qiao, Ren, Li; ECCV 2020).

Paper: "Learning to Predict Context-adaptive Convolution for Semantic Segmentation",
https://arxiv.org/abs/2004.08222. No official code or weights exist; the operator and its
interpretation choices are in :mod:`zoo.ops.cac` (:class:`~zoo.ops.cac.ContextAdaptiveConv`).

Architecture (the paper fixes the backbone and the module; the head around the module is a zoo
decision, documented here and exposed as arguments):
- backbone: ResNet-101 in torchvision's layout (``zoo.layers.resnet``), layer3 / layer4 dilated
  2 / 4 (output stride 8, torchvision's first-block rule), feature maps [layer3, layer4];
- decode head (:class:`CaCHead`): ``reduce`` 3x3 conv 2048 -> ``channels`` (512) + BN + ReLU (the CaC
  key conv is C x C per head and the kernel BN has C channels per head and dilation, so the module runs
  on a reduced width, as the usual OS-8 context heads: PSPNet/DANet/DMNet use 512), then ``cac`` (the
  CaC module: context-adaptive re-weighting at dilations 1, 3, 5 + global pooling branch, ``heads``
  ensembles), then ``bottleneck`` 3x3 conv 512 + BN + ReLU, Dropout2d(0.1) and the 1x1 ``conv_seg``;
- auxiliary head (training only): mmseg-style FCN head on layer3 (1024 -> 256 -> K), as the other
  dilated-ResNet segmentation models of the zoo (:class:`zoo.layers.FCNHead`).

Outputs: eval mode returns logits at 1/8 resolution (B, K, ceil(H/8), ceil(W/8)) (the segmentation
postprocess upsamples them); training mode returns ``{"out": logits, "aux": aux_logits}``.
"""
from __future__ import annotations

from typing import Callable, Sequence

from torch import Tensor, nn

from zoo.archs import register_arch
from zoo.layers import BaseDecodeHead, ConvModule, EncoderDecoder, FCNHead, NormSpec, make_norm, resnet, resnet_depth
from zoo.ops._checks import check_shape
from zoo.ops.cac import ContextAdaptiveConv

__all__ = ["CaCHead", "CaCNet", "cacnet"]


class CaCHead(BaseDecodeHead):
    """reduce (3x3) -> ContextAdaptiveConv -> bottleneck (3x3) -> Dropout2d -> conv_seg.

    (B, in_channels, h, w) -> (B, num_classes, h, w). ``cac_kwargs`` go to ``ContextAdaptiveConv``.
    """

    def __init__(self, in_channels: int = 2048, channels: int = 512, num_classes: int = 21, dropout: float = 0.1,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d, **cac_kwargs) -> None:
        super().__init__(channels, num_classes, dropout)
        self.in_channels = in_channels
        self.reduce = ConvModule(in_channels, channels, 3, padding=1, norm_layer=norm_layer)
        self.cac = ContextAdaptiveConv(channels, **cac_kwargs)
        self.bottleneck = ConvModule(channels, channels, 3, padding=1, norm_layer=norm_layer)

    def forward(self, x: Tensor) -> Tensor:
        check_shape(x, "B,C,H,W", "x", C=self.in_channels)
        return self.cls_seg(self.bottleneck(self.cac(self.reduce(x))))


CaCNet = EncoderDecoder  # dilated ResNet -> CaCHead on layer4, auxiliary FCNHead on layer3 in training


@register_arch("cacnet")
def cacnet(
    *,
    backbone: str = "resnet101",
    num_classes: int = 21,
    output_stride: int = 8,
    channels: int = 512,
    kernel_size: int = 3,
    dilations: Sequence[int] = (1, 3, 5),
    heads: int = 1,
    separate_kernels: bool = True,
    fusion: str = "sigmoid_sum",
    global_pool: bool = True,
    dropout: float = 0.1,
    aux: bool = True,
    norm: NormSpec = "bn",
    width: float = 1.0,
    context: bool = True,
) -> CaCNet:
    """CaC-Net on a dilated torchvision-layout ResNet (``backbone`` "resnet50" / "resnet101" / ...).

    CaC options (``kernel_size``, ``dilations``, ``heads``, ``separate_kernels``, ``fusion``,
    ``global_pool``) as :class:`zoo.ops.cac.ContextAdaptiveConv`. ``width`` scales the ResNet's channels
    (the ``-small`` entries). ``context=False`` is the plain twin: the CaC module replaced by the identity,
    the same reduce / bottleneck head and backbone otherwise (same keys but ``decode_head.cac.*``).
    """
    depth = resnet_depth(backbone, kinds=("bottleneck",))
    if output_stride not in (8, 16):
        raise ValueError(f"CaC-Net output_stride must be 8 or 16, got {output_stride}")
    norm_layer = make_norm(norm)
    body = resnet(depth=depth, output_stride=output_stride, norm=norm, features_only=True,
                  out_indices=(3, 4) if aux else (4,), width=width)
    c3, c4 = body.feature_channels[3], body.feature_channels[4]
    head = CaCHead(c4, channels, num_classes, dropout, norm_layer, kernel_size=kernel_size, dilations=dilations,
                   heads=heads, separate_kernels=separate_kernels, fusion=fusion, global_pool=global_pool)
    if not context:
        head.cac = nn.Identity()
    aux_head = FCNHead(c3, 256, num_classes, dropout, norm_layer) if aux else None
    return CaCNet(body, head, aux_head)
