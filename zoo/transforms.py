"""Inference transforms and post-processing, as nn.Modules on batched tensors.

Every preset runs on any device and under torch.compile: it reads only shapes and dtypes, never tensor
values, so there is no host sync. Registry entries name a preset and its arguments
(``transforms: {preset: segmentation, args: {...}}``); families register new presets with
:func:`register_transform` / :func:`register_postprocess`.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import InputError, RegistryError
from zoo.registry import Preset, thaw

_TRANSFORMS: dict[str, type[nn.Module]] = {}
_POSTPROCESS: dict[str, type[nn.Module]] = {}


def register_transform(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    def add(cls: type[nn.Module]) -> type[nn.Module]:
        _TRANSFORMS[name] = cls
        return cls
    return add


def register_postprocess(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    def add(cls: type[nn.Module]) -> type[nn.Module]:
        _POSTPROCESS[name] = cls
        return cls
    return add


def _build(table: dict[str, type[nn.Module]], spec: Preset, field: str, owner: str) -> nn.Module:
    import zoo.models  # noqa: F401  (families register their presets on import)

    if spec.preset not in table:
        raise RegistryError(
            f"entry {owner!r}, field '{field}.preset': unknown preset {spec.preset!r}; known: {', '.join(sorted(table))}"
        )
    try:
        return table[spec.preset](**thaw(spec.args))
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"entry {owner!r}, field '{field}.args': {exc}") from None


def build_transforms(spec: Preset, owner: str = "?") -> nn.Module:
    return _build(_TRANSFORMS, spec, "transforms", owner)


def build_postprocess(spec: Preset, owner: str = "?") -> nn.Module:
    return _build(_POSTPROCESS, spec, "postprocess", owner)


# ------------------------------------------------------------------------------------ helpers
def to_float_batch(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    """B x 3 x H x W (or 3 x H x W) uint8 in [0, 255] or float in [0, 1] -> float B x 3 x H x W in [0, 1]."""
    if not isinstance(images, torch.Tensor):
        raise InputError(f"{name} must be a tensor (B x 3 x H x W); read files with torchvision.io.read_image")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[1] != 3:
        raise InputError(f"{name} must have shape (B, 3, H, W) or (3, H, W), got {tuple(images.shape)}; "
                         "convert grey or RGBA images to RGB first")
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if not images.is_floating_point():
        raise InputError(f"{name} must be uint8 in [0, 255] or floating point in [0, 1], got {images.dtype}")
    return images


def resize_shorter_side(images: torch.Tensor, size: int) -> torch.Tensor:
    h, w = images.shape[-2:]
    scale = size / min(h, w)
    new = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(images, size=new, mode="bilinear", align_corners=False, antialias=True)


class Normalize(nn.Module):
    """(x * pixel_range - mean) / std per channel, after an optional RGB -> BGR flip."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], pixel_range: float = 1.0, channel_order: str = "rgb"):
        super().__init__()
        if channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        if len(mean) != 3 or len(std) != 3:
            raise ValueError("mean and std need 3 values each")
        self.pixel_range = float(pixel_range)
        self.channel_order = channel_order
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channel_order == "bgr":
            x = x.flip(1)
        mean = self.mean.to(device=x.device, dtype=x.dtype)
        std = self.std.to(device=x.device, dtype=x.dtype)
        return (x * self.pixel_range - mean) / std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}, pixel_range={self.pixel_range}, channel_order={self.channel_order!r}"


# ------------------------------------------------------------------------------------ segmentation
@register_transform("segmentation")
class SegmentationTransforms(nn.Module):
    """Images -> network input for semantic segmentation.

    Input: B x 3 x H x W uint8 [0, 255] or float [0, 1] RGB (a single 3 x H x W image is batched).
    Optional resize of the shorter side to ``resize``, then :class:`Normalize`. Caffe-trained models
    (DeepLab v2) use ``channel_order='bgr'``, ``pixel_range=255`` and std 1.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], pixel_range: float = 1.0,
                 channel_order: str = "rgb", resize: int | None = None):
        super().__init__()
        self.resize = resize
        self.normalize = Normalize(mean, std, pixel_range, channel_order)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = to_float_batch(images)
        if self.resize is not None:
            x = resize_shorter_side(x, self.resize)
        return self.normalize(x)


@register_postprocess("segmentation")
class SegmentationPostprocess(nn.Module):
    """Logits (B x K x h x w, or a dict with 'out') -> label map B x H x W (int64) at ``size``.

    Logits are upsampled bilinearly to ``size`` (the input image size) before the argmax.
    """

    def forward(self, output: torch.Tensor | Mapping[str, Any], size: Sequence[int]) -> torch.Tensor:
        logits = output["out"] if isinstance(output, Mapping) else output
        if not isinstance(logits, torch.Tensor) or logits.dim() != 4:
            raise InputError(f"segmentation logits must be B x K x h x w, got {getattr(logits, 'shape', type(logits))}")
        size = tuple(int(s) for s in size[-2:])
        if tuple(logits.shape[-2:]) != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits.argmax(1)
