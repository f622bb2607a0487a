"""Normalisation layers by name: ``"bn"``, ``"frozen_bn"`` or any ``num_features -> nn.Module`` callable."""
from __future__ import annotations

from typing import Callable

from torch import nn
from torchvision.ops import FrozenBatchNorm2d

__all__ = ["NormSpec", "make_norm"]

NormSpec = str | Callable[[int], nn.Module]


def make_norm(norm: NormSpec) -> Callable[[int], nn.Module]:
    """Normalisation factory from "bn", "frozen_bn" or a callable ``num_features -> nn.Module``."""
    if callable(norm):
        return norm
    if norm == "bn":
        return nn.BatchNorm2d
    if norm == "frozen_bn":
        return FrozenBatchNorm2d
    raise ValueError(f"norm must be 'bn', 'frozen_bn' or a callable num_features -> nn.Module, got {norm!r}")
