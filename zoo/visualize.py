"""Colour-coding of predictions (torch only, any device)."""
from __future__ import annotations

import torch


def voc_palette(num_classes: int = 256, device: torch.device | str | None = None) -> torch.Tensor:
    """The PASCAL VOC colour map: ``num_classes x 3`` uint8 (class 0 black, 255 = ignore is cream)."""
    labels = torch.arange(num_classes, device=device)
    colours = torch.zeros(num_classes, 3, dtype=torch.long, device=device)
    for shift in range(7, -1, -1):
        for channel in range(3):
            bit = (labels >> channel) & 1
            colours[:, channel] |= bit << shift
        labels = labels >> 3
    return colours.to(torch.uint8)


def colourise_labels(labels: torch.Tensor, num_classes: int = 256) -> torch.Tensor:
    """Label map B x H x W (int) -> B x 3 x H x W uint8 colours."""
    palette = voc_palette(max(num_classes, 256), device=labels.device)
    return palette[labels.long().clamp(0, palette.shape[0] - 1)].permute(0, 3, 1, 2).contiguous()


def blend(images: torch.Tensor, overlay: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Alpha-blend two B x 3 x H x W uint8 tensors."""
    mixed = images.float() * (1 - alpha) + overlay.float() * alpha
    return mixed.round().clamp(0, 255).to(torch.uint8)
