"""Input checks and normalisation that the task presets share (:mod:`zoo.tasks`).

Every preset runs on any device and under torch.compile. Presets read shapes and dtypes; the one value
check, the range of float input (:func:`to_float_batch`), runs in eager mode only (one host sync, none for
uint8 input) and is skipped under torch.compile / torch.export tracing.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import InputError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "RANGE_TOLERANCE", "Normalize", "check_input_args", "resize_shorter_side",
           "to_float_batch", "unit_float"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANGE_TOLERANCE = 1e-3  # float input may exceed [0, input_range] by this fraction of the range (rounding)


def check_input_args(input_range: float, min_size: int | None) -> None:
    """ValueError unless ``input_range`` is positive and ``min_size`` is None or a positive int (presets'
    constructor arguments for :func:`to_float_batch`)."""
    if isinstance(input_range, bool) or not isinstance(input_range, (int, float)) or not 0 < input_range < math.inf:
        raise ValueError(f"input_range must be a positive number (1 for float images in [0, 1], 255 for [0, 255]), "
                         f"got {input_range!r}")
    if min_size is not None and (isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 1):
        raise ValueError(f"min_size must be None or a positive int (pixels), got {min_size!r}")


def check_min_size(x: torch.Tensor, min_size: int | None, name: str = "images") -> None:
    """:class:`InputError` when the last two dims of ``x`` (H, W) are below ``min_size`` (shape only)."""
    h, w = x.shape[-2:]
    if min_size is not None and (h < min_size or w < min_size):
        raise InputError(f"{name} are {h} x {w} (H x W) pixels, smaller than the minimum {min_size} x {min_size} "
                         "this model takes (registry field min_input_size); use larger images or upsample them "
                         "first (torch.nn.functional.interpolate)")


def to_float_batch(images: torch.Tensor, name: str = "images", *, input_range: float = 1.0,
                   min_size: int | None = None) -> torch.Tensor:
    """B x 3 x H x W (or 3 x H x W) uint8 in [0, 255] or float in [0, input_range] -> float B x 3 x H x W in [0, 1].

    Raises :class:`InputError` for a wrong shape or dtype, an empty image, H or W below ``min_size``, and
    float values outside [0, input_range] (within ``RANGE_TOLERANCE``; NaN and inf included), e.g. float
    images in 0..255 given to transforms that expect [0, 1]. Shape and dtype checks read metadata only.
    The range check reads values: in eager mode it is one ``aminmax`` and one host sync (for a CUDA tensor,
    a wait for the kernels that produce it), and only for float input; uint8 input, the usual fast path, is
    not checked. Under torch.compile / torch.export tracing (``torch.compiler.is_compiling()``) it is
    skipped, so graphs keep no data-dependent branch or sync. A device-side ``torch._assert_async`` would
    avoid the sync but fails by aborting the CUDA context, not with a readable error, so it is not used.
    """
    if not isinstance(images, torch.Tensor):
        raise InputError(f"{name} must be a tensor (B x 3 x H x W); read files with zoo.io.read_image")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[1] != 3:
        raise InputError(f"{name} must have shape (B, 3, H, W) or (3, H, W), got {tuple(images.shape)}; "
                         "convert grey or RGBA images to RGB first")
    h, w = images.shape[-2:]
    if h == 0 or w == 0:
        raise InputError(f"{name} are empty: {h} x {w} (H x W) pixels, shape {tuple(images.shape)}")
    check_min_size(images, min_size, name)
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if not images.is_floating_point():
        raise InputError(f"{name} must be uint8 in [0, 255] or floating point in [0, {input_range:g}], got "
                         f"{images.dtype}; convert 0..255 integer images with images.to(torch.uint8)")
    _check_float_range(images, name, input_range)
    return images if input_range == 1 else images / input_range


def _check_float_range(images: torch.Tensor, name: str, input_range: float) -> None:
    if torch.compiler.is_compiling() or images.device.type == "meta" or images.numel() == 0:
        return
    low, high = torch.stack(torch.aminmax(images)).tolist()  # the one host sync
    tol = RANGE_TOLERANCE * input_range
    if -tol <= low and high <= input_range + tol:  # False for NaN
        return
    found = f"values in [{low:.6g}, {high:.6g}]" if math.isfinite(low) and math.isfinite(high) else "NaN or inf values"
    if input_range == 1:
        fix = ("pass uint8 images, or divide by 255, or construct the transforms with input_range=255 "
               "(float images in [0, 255])")
    else:
        fix = f"pass uint8 images, or float images in [0, {input_range:g}] as given by input_range={input_range:g}"
    raise InputError(f"{name} are {images.dtype} with {found}, outside [0, {input_range:g}]; {fix}")


def unit_float(x: torch.Tensor, name: str) -> torch.Tensor:
    """uint8 in [0, 255] -> float in [0, 1]; floating point passes unchanged (values are not read);
    :class:`InputError` naming ``name`` for any other dtype."""
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    if not x.is_floating_point():
        raise InputError(f"{name} must be uint8 in [0, 255] or floating point in [0, 1], got {x.dtype}")
    return x


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
