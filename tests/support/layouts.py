"""Pieces of original checkpoint layouts that several upstream code bases share, for the converter tests
that write those layouts out (key -> shape, in the upstream module's registration order)."""
from __future__ import annotations

from collections.abc import Callable


def resnet_block_shapes(shapes: dict[str, tuple[int, ...]], p: str, block: str, inplanes: int, planes: int, *,
                        downsample: bool, bn: Callable[[str, int], None], conv2_offset: int = 0) -> int:
    """Add the keys of one ResNet block under torchvision's names (``conv1``, ``bn1``, ... ``downsample.0/1``,
    which fyu/drn, mmcv / mmdet / mmseg keep) at prefix ``p``: ``block`` "basic" (two 3x3 convs) or
    "bottleneck" (1x1, 3x3, 1x1 x4), convs without bias, ``bn(prefix, channels)`` adding the layout's norm
    keys; ``conv2_offset`` > 0: conv2 is mmcv's DeformConv2dPack / ModulatedDeformConv2dPack with that many
    offset channels (``conv2.conv_offset``, 3x3 with bias). Returns the block's output channels."""
    bottleneck = block == "bottleneck"
    out = planes * 4 if bottleneck else planes
    k1 = 1 if bottleneck else 3
    shapes[f"{p}.conv1.weight"] = (planes, inplanes, k1, k1)
    bn(f"{p}.bn1", planes)
    shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
    if conv2_offset:
        shapes[f"{p}.conv2.conv_offset.weight"] = (conv2_offset, planes, 3, 3)
        shapes[f"{p}.conv2.conv_offset.bias"] = (conv2_offset,)
    bn(f"{p}.bn2", planes)
    if bottleneck:
        shapes[f"{p}.conv3.weight"] = (out, planes, 1, 1)
        bn(f"{p}.bn3", out)
    if downsample:
        shapes[f"{p}.downsample.0.weight"] = (out, inplanes, 1, 1)
        bn(f"{p}.downsample.1", out)
    return out
