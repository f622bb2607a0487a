"""ResNet-18 with dynamic 3x3 convolutions: DY-ResNet-18 (Dynamic Convolution) and DyNet-ResNet-18.

Papers: Chen et al., "Dynamic Convolution: Attention over Convolution Kernels", CVPR 2020
(https://arxiv.org/abs/1912.03458); Zhang et al., "DyNet: Dynamic Convolution for Accelerating
Convolutional Neural Networks", arXiv 2020 (https://arxiv.org/abs/2004.10694). Neither has official code.

Built on :class:`zoo.layers.resnet.ResNet` (torchvision layout and keys): the block class is
:class:`DynamicBasicBlock`, a :class:`~zoo.layers.resnet.BasicBlock` whose two 3x3 convs (``conv1`` and
``conv2``) are dynamic. ResNet's ``conv2_factory`` hook alone cannot do this (it only builds ``conv2``;
``conv1`` of a BasicBlock is always a static ``nn.Conv2d``), so the block subclass builds ``conv1`` with the
same factory and passes the hook to the parent for ``conv2``.

- ``dy_resnet``: every 3x3 conv is :class:`zoo.ops.dy_conv.DyConv2d` (K = 4 kernels with bias, attention
  softmax(FC2(ReLU(FC1(GAP))) / tau), FC1 reduction 4); each is followed by BN (+ ReLU) as in ResNet. Anneal
  tau 30 -> 1 during training with ``zoo.ops.dy_conv.set_temperature(model, temperature_schedule(epoch))``.
- ``dynet_resnet``: every 3x3 conv is :class:`zoo.ops.dynet.DyNetConv2d` (T = 4 fixed kernels fused with
  unconstrained coefficients FC(GAP(x))).

Small variants (zoo's options, not in the papers): ``width`` scales every stage's channels (64, 128, 256,
512 x width, rounded; :class:`zoo.layers.resnet.ResNet`'s ``width``); ``stem="cifar"`` replaces the
ImageNet stem (7x7 stride-2 conv + 3x3 stride-2 max-pool, /4) by a 3x3 stride-1 conv and no max-pool, the
usual ResNet layout for 32x32 inputs (CIFAR), so 32x32 images reach layer4 at 4x4 instead of 1x1;
``dynamic=False`` builds the same network with plain ``nn.Conv2d`` 3x3 convs (torchvision's BasicBlock, no
bias), the static baseline of a DY-conv comparison. The defaults give the papers' ResNet-18.

Interpretation choices: the 7x7 stem conv stays static (Dynamic Convolution keeps the first layer
static); the 1x1 projection shortcuts (``downsample.0``) stay static as well, "every 3x3 conv" being our
reading (the shortcut holds 1.5% of the conv weights); the dynamic convs keep their per-kernel biases
(the aggregated bias differs per sample, so the following BN does not cancel it). DyNet reports FLOP
reductions from networks whose widths were re-chosen around the dynamic convs; that configuration is not
published, so ``dynet-resnet18`` keeps ResNet-18's widths and only swaps the 3x3 convs.
Input (B, 3, H, W) -> logits (B, num_classes).
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from zoo.archs import register_arch
from zoo.layers import BasicBlock, ResNet
from zoo.ops.dy_conv import DyConv2d
from zoo.ops.dynet import DyNetConv2d

__all__ = ["DynamicBasicBlock", "DyConvBasicBlock", "DyNetBasicBlock", "dy_resnet", "dynet_resnet"]

_LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


class DynamicBasicBlock(BasicBlock):
    """ResNet BasicBlock whose ``conv1`` (3x3, stride) and ``conv2`` (3x3) are built by ``conv_layer``
    ``(in, out, kernel_size=3, stride=, padding=, dilation=, num_kernels=)``; subclasses set the layer."""

    conv_layer: Callable[..., nn.Module]
    num_kernels: int = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation: int = 1, norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d, **kwargs) -> None:
        def factory(*, in_channels: int, out_channels: int, stride: int, dilation: int, **_) -> nn.Module:
            return type(self).conv_layer(in_channels, out_channels, 3, stride=stride, padding=dilation,
                                         dilation=dilation, num_kernels=self.num_kernels)

        super().__init__(inplanes, planes, stride, downsample, dilation, norm_layer,
                         stride_in_1x1=kwargs.get("stride_in_1x1", False), conv2_factory=factory,
                         stage=kwargs.get("stage", 0), block=kwargs.get("block", 0))
        self.conv1 = factory(in_channels=inplanes, out_channels=planes, stride=stride, dilation=dilation)


class DyConvBasicBlock(DynamicBasicBlock):
    """BasicBlock with two :class:`DyConv2d` (K = 4) 3x3 convs."""

    conv_layer = DyConv2d


class DyNetBasicBlock(DynamicBasicBlock):
    """BasicBlock with two :class:`DyNetConv2d` (T = 4) 3x3 convs."""

    conv_layer = DyNetConv2d


def _block(base: type[DynamicBasicBlock], num_kernels: int) -> type[DynamicBasicBlock]:
    if num_kernels < 1:
        raise ValueError(f"num_kernels must be >= 1, got {num_kernels}")
    if num_kernels == base.num_kernels:
        return base
    return type(f"{base.__name__}K{num_kernels}", (base,), {"num_kernels": num_kernels})


STEMS = ("imagenet", "cifar")


def _build(base: type[DynamicBasicBlock], depth: int, num_kernels: int, num_classes: int, width: float,
           stem: str, dynamic: bool) -> ResNet:
    if depth not in _LAYERS:
        raise ValueError(f"dynamic ResNet depth must be one of {sorted(_LAYERS)}, got {depth}")
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
    block = _block(base, num_kernels)  # validates num_kernels either way
    block = block if dynamic else BasicBlock
    model = ResNet(block, _LAYERS[depth], num_classes=num_classes, width=width)
    if stem == "cifar":  # 3x3 stride-1 stem conv, no max-pool; same key (conv1.weight), ResNet's init
        model.conv1 = nn.Conv2d(3, model.conv1.out_channels, 3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.maxpool = nn.Identity()
    return model


@register_arch("dy_resnet")
def dy_resnet(*, depth: int = 18, num_kernels: int = 4, num_classes: int = 1000, width: float = 1.0,
              stem: str = "imagenet", dynamic: bool = True) -> ResNet:
    """DY-ResNet-18/34 (Dynamic Convolution): every 3x3 conv a :class:`DyConv2d` with ``num_kernels``
    kernels; random init, temperature 1 (set it with ``zoo.ops.dy_conv.set_temperature``). ``width``,
    ``stem`` ("imagenet" or "cifar") and ``dynamic`` (False: plain 3x3 convs) as the module docstring."""
    return _build(DyConvBasicBlock, depth, num_kernels, num_classes, width, stem, dynamic)


@register_arch("dynet_resnet")
def dynet_resnet(*, depth: int = 18, num_kernels: int = 4, num_classes: int = 1000, width: float = 1.0,
                 stem: str = "imagenet", dynamic: bool = True) -> ResNet:
    """DyNet-ResNet-18/34: every 3x3 conv a :class:`DyNetConv2d` fusing ``num_kernels`` fixed kernels;
    ``width``, ``stem`` and ``dynamic`` as :func:`dy_resnet`."""
    return _build(DyNetBasicBlock, depth, num_kernels, num_classes, width, stem, dynamic)
