"""Segmentation decode heads and the encoder-decoder segmenter: mmseg's ``BaseDecodeHead`` classifier,
``FCNHead`` and ``EncoderDecoder`` (with mmseg's key names), and torchvision's FCN head."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

from torch import Tensor, nn

from zoo.layers.conv import ConvModule
from zoo.layers.resnet import ResNet
from zoo.checks import check_shape

__all__ = ["BaseDecodeHead", "EncoderDecoder", "FCNHead", "fcn_head", "segmentation_outputs"]


class BaseDecodeHead(nn.Module):
    """mmseg ``BaseDecodeHead``'s classifier ``cls_seg``: Dropout2d(dropout) -> 1x1 ``conv_seg`` (init N(0, 0.01),
    bias 0). Decode heads subclass it and end their ``forward`` with ``self.cls_seg(x)``."""

    def __init__(self, channels: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else None
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.conv_seg.weight, 0.0, 0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def cls_seg(self, x: Tensor) -> Tensor:
        return self.conv_seg(self.dropout(x) if self.dropout is not None else x)


class FCNHead(BaseDecodeHead):
    """mmseg ``FCNHead`` (num_convs 1, kernel 3, no concat_input): (B, in, h, w) -> (B, K, h, w)."""

    def __init__(self, in_channels: int = 1024, channels: int = 256, num_classes: int = 150,
                 dropout: float = 0.1, norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__(channels, num_classes, dropout)
        self.in_channels = in_channels
        self.convs = nn.Sequential(ConvModule(in_channels, channels, 3, padding=1, norm_layer=norm_layer))

    def forward(self, x: Tensor) -> Tensor:
        check_shape(x, "B,C,H,W", "x", C=self.in_channels)
        return self.cls_seg(self.convs(x))


class EncoderDecoder(nn.Module):
    """mmseg-style segmenter: ``backbone`` (features [layer3, layer4]) -> ``decode_head`` on layer4;
    ``auxiliary_head`` on layer3 in training only. (B, 3, H, W) -> logits (B, K, h, w) in eval,
    ``{"out", "aux"}`` in training (torchvision's keys)."""

    def __init__(self, backbone: ResNet, decode_head: nn.Module, auxiliary_head: FCNHead | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head
        self.auxiliary_head = auxiliary_head

    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:
        check_shape(x, "B,C,H,W", "x", C=3)
        return segmentation_outputs(self.backbone(x), self.decode_head, self.auxiliary_head, self.training)


def segmentation_outputs(feats: Sequence[Tensor], head: nn.Module, aux_head: nn.Module | None,
                         training: bool) -> Tensor | dict[str, Tensor]:
    """The output of a segmenter with an optional auxiliary head, torchvision's convention: ``head``'s logits
    on the last feature map; in training ``{"out": those, "aux": aux_head(feats[0])}`` (``"aux"`` only with
    an auxiliary head, which eval mode does not run)."""
    out = head(feats[-1])
    if not training:
        return out
    result = {"out": out}
    if aux_head is not None:
        result["aux"] = aux_head(feats[0])
    return result


def fcn_head(in_channels: int, num_classes: int, norm_layer: Callable[[int], nn.Module]) -> nn.Sequential:
    """torchvision's ``FCNHead`` (DeepLab v3's auxiliary classifier): 3x3 conv to in/4 channels, norm, ReLU,
    Dropout(0.1), 1x1 conv to ``num_classes``; keys ``0..4``."""
    inter = in_channels // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, inter, 3, padding=1, bias=False),
        norm_layer(inter),
        nn.ReLU(),
        nn.Dropout(0.1),
        nn.Conv2d(inter, num_classes, 1),
    )
