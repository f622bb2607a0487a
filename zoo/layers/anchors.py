"""Anchor generation for the detectors built on torchvision's detection API (Faster / Mask R-CNN, R-FCN)."""
from __future__ import annotations

import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator

__all__ = ["DeviceAnchorGenerator"]


class DeviceAnchorGenerator(AnchorGenerator):
    """torchvision's AnchorGenerator whose cell anchors are recomputed on the input's device/dtype at
    every call (so a model built on the meta device and loaded afterwards works)."""

    def set_cell_anchors(self, dtype: torch.dtype, device: torch.device) -> None:
        self.cell_anchors = [self.generate_anchors(size, ratios, dtype, device)
                             for size, ratios in zip(self.sizes, self.aspect_ratios)]
