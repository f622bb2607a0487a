"""Conv + norm + activation modules with the key names of the codebases zoo's weights come from."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

__all__ = ["ConvModule"]


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
