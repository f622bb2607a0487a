"""Image-classification transforms and post-processing presets (registered as ``"classification"``).

Transforms: the usual ImageNet evaluation protocol (torchvision / fyu/drn ``classify.py``): resize the
shorter side to ``resize`` (256, bilinear with antialiasing), centre crop ``crop`` x ``crop`` (224),
then :class:`zoo.transforms.Normalize` (ImageNet RGB mean/std in [0, 1] by default).

Post-processing: softmax over the class logits and the ``top_k`` best classes, as
``{"scores": (B, k) probabilities, "labels": (B, k) int64 class indices}``, best first.

Both read only shapes, never tensor values (no host sync; traceable).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from zoo.errors import InputError
from zoo.transforms import Normalize, register_postprocess, register_transform, resize_shorter_side, to_float_batch

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ClassificationPostprocess", "ClassificationTransforms", "center_crop"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Central ``size`` x ``size`` window of B x C x H x W images (offsets rounded as torchvision)."""
    h, w = images.shape[-2:]
    if h < size or w < size:
        raise InputError(f"center_crop: images of size {h}x{w} are smaller than the crop {size}; resize them first")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return images[..., top:top + size, left:left + size]


@register_transform("classification")
class ClassificationTransforms(nn.Module):
    """Images (B x 3 x H x W uint8 [0, 255] or float [0, 1], RGB) -> (B, 3, crop, crop) network input.

    ``resize=None`` skips the resize, ``crop=None`` the crop (then any image size passes through).
    ``mean``/``std``/``pixel_range``/``channel_order`` as :class:`zoo.transforms.Normalize`.
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 resize: int | None = 256, crop: int | None = 224, pixel_range: float = 1.0,
                 channel_order: str = "rgb"):
        super().__init__()
        if resize is not None and crop is not None and crop > resize:
            raise ValueError(f"crop ({crop}) must not exceed resize ({resize})")
        self.resize, self.crop = resize, crop
        self.normalize = Normalize(mean, std, pixel_range, channel_order)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = to_float_batch(images)
        if self.resize is not None:
            x = resize_shorter_side(x, self.resize)
        if self.crop is not None:
            x = center_crop(x, self.crop)
        return self.normalize(x)


@register_postprocess("classification")
class ClassificationPostprocess(nn.Module):
    """Logits (B, K) (or a dict with ``"out"``) -> ``{"scores": (B, k), "labels": (B, k)}``, softmax top-k.

    ``size`` (the image size the segmentation postprocess takes) is accepted and ignored, so every
    preset is called the same way: ``postprocess(model(x), images.shape[-2:])``.
    """

    def __init__(self, top_k: int = 5):
        super().__init__()
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.top_k = top_k

    def forward(self, output: torch.Tensor | Mapping[str, Any], size: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
        logits = output["out"] if isinstance(output, Mapping) else output
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            raise InputError(f"classification logits must be B x K, got {getattr(logits, 'shape', type(logits))}")
        k = min(self.top_k, logits.shape[1])
        scores, labels = logits.float().softmax(dim=1).topk(k, dim=1)
        return {"scores": scores, "labels": labels}
