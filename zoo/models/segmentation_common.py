"""Parts shared by the mmseg-style segmentation families (DMNet, CaC-Net): mmcv ``ConvModule``,
mmseg's ``cls_seg`` / ``FCNHead`` and the encoder-decoder wrapper, with mmseg's key names."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from zoo.models.resnet import ResNet
from zoo.ops._checks import check_shape

__all__ = ["ConvModule", "EncoderDecoder", "FCNHead"]


class ConvModule(nn.Module):
    """Conv (no bias) + norm + ReLU with mmcv ``ConvModule`` names (``conv``, ``bn``); mmcv init
    (kaiming normal fan_out for the conv, norm weight 1 / bias 0)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, padding: int = 0,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        self.bn = norm_layer(out_channels)
        self.activate = nn.ReLU(inplace=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        if isinstance(getattr(self.bn, "weight", None), torch.Tensor):
            nn.init.ones_(self.bn.weight)
            nn.init.zeros_(self.bn.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.activate(self.bn(self.conv(x)))


class _ClsSeg(nn.Module):
    """mmseg ``BaseDecodeHead.cls_seg``: Dropout2d(dropout) -> 1x1 ``conv_seg`` (init N(0, 0.01), bias 0)."""

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


class FCNHead(_ClsSeg):
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
        feats = self.backbone(x)
        out = self.decode_head(feats[-1])
        if not self.training:
            return out
        result = {"out": out}
        if self.auxiliary_head is not None:
            result["aux"] = self.auxiliary_head(feats[0])
        return result
