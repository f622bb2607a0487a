"""DeepLab v2 and v3 semantic segmentation on dilated ResNets.

Papers:
- DeepLab v2: Chen, Papandreou, Kokkinos, Murphy, Yuille, TPAMI 2017, https://arxiv.org/abs/1606.00915
  (port checked: kazuto1011/deeplab-pytorch ``libs/models/{deeplabv2,resnet,msc}.py``).
- DeepLab v3: Chen, Papandreou, Schroff, Adam, 2017, https://arxiv.org/abs/1706.05587
  (port checked: torchvision ``models/segmentation/deeplabv3.py``).

Outputs (both families): in eval mode ``forward`` returns one tensor of logits at the feature
resolution, (B, num_classes, h, w) with h = ceil(H / output_stride) for the usual odd sizes; it is
NOT upsampled to the input size (the segmentation postprocess does that, bilinear,
align_corners=False as torchvision). In training mode:
- DeepLabV3 returns ``{"out": logits, "aux": aux_logits}`` (``"aux"`` only with the auxiliary FCN
  head, which is skipped in eval mode), torchvision's keys at the feature resolution;
- DeepLabV2 returns ``[logits at scale s for s in scales] + [fused]`` (see
  :mod:`zoo.ops.multiscale`), each at its own resolution, as kazuto1011's MSC.

State-dict keys: DeepLabV3 uses torchvision's (``backbone.*``, ``classifier.0`` = ASPP,
``classifier.1..4`` = 3x3 conv, BN, ReLU, 1x1 logits conv, ``aux_classifier.0..4``), so torchvision
checkpoints load 1:1. DeepLabV2 uses ``backbone.*`` (torchvision ResNet names) and ``aspp.convs.i``;
see ``zoo.converters.kazuto_deeplab`` for the mapping from the PyTorch port.

DeepLab v2 backbone (MSRA ResNet-101 as converted from Caffe): stride on the first 1x1 conv of a
bottleneck, stem max-pool with ``ceil_mode``, BN eps 1e-5, res4 (layer3) dilation 2 and res5 (layer4)
dilation 4 in EVERY block, output stride 8. The paper trained with BN statistics and affine frozen;
pass ``norm="frozen_bn"`` to train the same way.

Extension point (LS-DFN): ``DeepLabV2(res5_extra=module)`` feeds the output of
``backbone.layer4[res5_tap]`` (res5b for ``res5_tap=1``) to ``module``, whose output (B, C', h, w) is
concatenated to layer4's (res5c) output before the ASPP (which then has 2048 + C' input channels).
The extra module runs at every input scale with shared weights.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from zoo.archs import register_arch
from zoo.layers import (Conv2Factory, LSDFNBranch, NormSpec, ResNet, fcn_head, make_norm, resnet, resnet_depth,
                        segmentation_outputs)
from zoo.ops._checks import check_shape
from zoo.ops.aspp import ASPP
from zoo.ops.multiscale import multiscale_fusion

__all__ = ["DeepLabV2", "DeepLabV3", "deeplabv2", "deeplabv3"]


_RES5_CHANNELS = {18: 512, 34: 512, 50: 2048, 101: 2048, 152: 2048}


class DeepLabV3(nn.Module):
    """DeepLab v3: dilated ResNet -> ASPP head -> logits, optional auxiliary FCN head on layer3.

    ``backbone`` is a ``features_only`` ResNet returning [layer3, layer4] (with aux) or [layer4];
    ``classifier`` maps layer4 features to logits; ``aux_classifier`` maps layer3 features to logits.
    Input (B, 3, H, W); output as described in the module docstring.
    """

    def __init__(self, backbone: ResNet, classifier: nn.Module, aux_classifier: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.aux_classifier = aux_classifier

    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:
        check_shape(x, "B,C,H,W", "x", C=3)
        return segmentation_outputs(self.backbone(x), self.classifier, self.aux_classifier, self.training)


class DeepLabV2(nn.Module):
    """DeepLab v2: MSRA dilated ResNet -> ASPP (summed 3x3 atrous logits), multi-scale inputs fused
    by max; optional ``res5_extra`` branch tapped at ``backbone.layer4[res5_tap]``.

    Args:
        backbone: ResNet (its avgpool/fc are not used).
        aspp: ASPP in mode "v2" with ``in_channels = 2048 + res5_extra_channels``.
        scales, fuse, align_corners: multi-scale inputs, see :mod:`zoo.ops.multiscale`.
        res5_extra: module mapping layer4[res5_tap]'s output (B, 2048, h, w) to (B, C', h, w).
        res5_tap: index of the tapped layer4 block (1 = res5b).
    """

    def __init__(
        self,
        backbone: ResNet,
        aspp: ASPP,
        *,
        scales: Sequence[float] = (1.0, 0.75, 0.5),
        fuse: str = "max",
        align_corners: bool = False,
        res5_extra: nn.Module | None = None,
        res5_tap: int = 1,
    ) -> None:
        super().__init__()
        if not -len(backbone.layer4) <= res5_tap < len(backbone.layer4):
            raise ValueError(f"res5_tap must index one of the {len(backbone.layer4)} layer4 blocks, got {res5_tap}")
        self.backbone = backbone
        self.res5_extra = res5_extra
        self.res5_tap = res5_tap % len(backbone.layer4)
        self.aspp = aspp
        self.scales = tuple(float(s) for s in scales)
        self.fuse = fuse
        self.align_corners = align_corners
        if 1.0 not in self.scales or fuse not in ("max", "mean"):
            raise ValueError(f"scales must contain 1.0 and fuse be 'max' or 'mean', got {self.scales}, {fuse!r}")

    def features(self, x: Tensor) -> Tensor:
        """Single-scale features fed to the ASPP: layer4 output (B, 2048, h, w), concatenated with
        ``res5_extra``'s output when present."""
        b = self.backbone
        x = b.layer3(b.layer2(b.layer1(b.maxpool(b.stem(x)))))
        if self.res5_extra is None:
            return b.layer4(x)
        tapped = x
        for i, block in enumerate(b.layer4):
            x = block(x)
            if i == self.res5_tap:
                tapped = x
        return torch.cat([x, self.res5_extra(tapped)], dim=1)

    def forward_single(self, x: Tensor) -> Tensor:
        """Logits (B, num_classes, h, w) for one input scale."""
        return self.aspp(self.features(x))

    def inserted_input_channels(self) -> dict[str, tuple[int, int, int]]:
        """Where ``res5_extra`` (the LS-DFN branch) enters plain DeepLab v2: ``{parameter: (dim, start,
        count)}``. Its channels follow layer4's in every ASPP branch; zero there, the network computes what
        DeepLab v2 does (see :func:`zoo.weights.expand_state_dict`)."""
        if self.res5_extra is None:
            return {}
        count = self.res5_extra.out_channels
        return {f"aspp.convs.{i}.weight": (1, conv.in_channels - count, count) for i, conv in enumerate(self.aspp.convs)}

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        check_shape(x, "B,C,H,W", "x", C=3)
        return multiscale_fusion(
            self.forward_single, x, self.scales, self.fuse, self.align_corners, return_all=self.training
        )


@register_arch("deeplabv3")
def deeplabv3(
    *,
    backbone: str = "resnet50",
    num_classes: int = 21,
    output_stride: int = 8,
    atrous_rates: Sequence[int] | None = None,
    multi_grid: Sequence[int] | None = None,
    aux: bool = True,
    norm: NormSpec = "bn",
    aspp_dropout: float = 0.5,
    conv2_factory: Conv2Factory | None = None,
) -> DeepLabV3:
    """DeepLab v3 with torchvision's layout (torchvision: output_stride 8, rates 12/24/36, aux head).

    ``atrous_rates`` default: (6, 12, 18) at output stride 16, doubled at 8, as the paper.
    ``multi_grid``: per-block factors of layer4, e.g. (1, 2, 4) (paper; torchvision uses none).
    """
    if output_stride not in (8, 16):
        raise ValueError(f"DeepLab v3 output_stride must be 8 or 16, got {output_stride}")
    rates = tuple(atrous_rates) if atrous_rates is not None else tuple(r * 16 // output_stride for r in (6, 12, 18))
    norm_layer = make_norm(norm)
    body = resnet(
        depth=resnet_depth(backbone),
        output_stride=output_stride,
        multi_grid=multi_grid,
        norm=norm,
        conv2_factory=conv2_factory,
        features_only=True,
        out_indices=(3, 4) if aux else (4,),
    )
    c3, c4 = body.feature_channels[3], body.feature_channels[4]
    classifier = nn.Sequential(
        ASPP(c4, 256, rates, mode="v3", norm_layer=norm_layer if norm != "bn" else None, dropout=aspp_dropout),
        nn.Conv2d(256, 256, 3, padding=1, bias=False),
        norm_layer(256),
        nn.ReLU(),
        nn.Conv2d(256, num_classes, 1),
    )
    aux_classifier = fcn_head(c3, num_classes, norm_layer) if aux else None
    return DeepLabV3(body, classifier, aux_classifier)


@register_arch("deeplabv2")
def deeplabv2(
    *,
    backbone: str = "resnet101",
    num_classes: int = 21,
    atrous_rates: Sequence[int] = (6, 12, 18, 24),
    scales: Sequence[float] = (1.0, 0.75, 0.5),
    fuse: str = "max",
    align_corners: bool = False,
    norm: NormSpec = "bn",
    conv2_factory: Conv2Factory | None = None,
    res5_extra: nn.Module | None = None,
    res5_extra_channels: int | None = None,
    res5_tap: int = 1,
    lsdfn: Mapping[str, Any] | None = None,
    width: float = 1.0,
) -> DeepLabV2:
    """DeepLab v2 (ASPP-L rates 6/12/18/24, multi-scale inputs 1/0.75/0.5 with max fusion).

    ``res5_extra_channels`` defaults to ``res5_extra.out_channels``; ``scales=(1.0,)`` disables the
    multi-scale inputs. ``lsdfn`` (arguments of :class:`LSDFNBranch`, e.g. ``{out_channels: 24,
    samples_per_side: 5, sample_stride: 3}``) builds the LS-DFN variant: LS-DFN on res5b, concatenated to
    res5c. ``width`` scales the ResNet's channels (:func:`zoo.layers.resnet.resnet`; the ``-small``
    entries). Other arguments as :class:`DeepLabV2`.
    """
    if lsdfn is not None and res5_extra is not None:
        raise ValueError("give either lsdfn (the LS-DFN variant) or your own res5_extra module, not both")
    if lsdfn is not None:
        depth = resnet_depth(backbone)
        res5_channels = max(1, round(512 * width)) * (_RES5_CHANNELS[depth] // 512)
        res5_extra = LSDFNBranch(res5_channels, **lsdfn)
    extra = 0
    if res5_extra is not None:
        extra = res5_extra_channels if res5_extra_channels is not None else getattr(res5_extra, "out_channels", None)
        if not isinstance(extra, int) or extra < 1:
            raise ValueError(
                "res5_extra needs its output channel count: pass res5_extra_channels=C' or give the module "
                f"an int attribute out_channels (got {extra!r})"
            )
    elif res5_extra_channels:
        raise ValueError("res5_extra_channels was given without a res5_extra module")
    if 1.0 not in tuple(float(v) for v in scales) or fuse not in ("max", "mean"):
        raise ValueError(f"scales must contain 1.0 and fuse be 'max' or 'mean', got {tuple(scales)}, {fuse!r}")
    body = resnet(
        depth=resnet_depth(backbone),
        output_stride=8,
        dilate_first_block=True,
        stride_in_1x1=True,
        pool_ceil_mode=True,
        norm=norm,
        conv2_factory=conv2_factory,
        features_only=True,
        out_indices=(4,),
        width=width,
    )
    aspp = ASPP(body.feature_channels[4] + extra, num_classes, atrous_rates, mode="v2")
    return DeepLabV2(
        body, aspp, scales=scales, fuse=fuse, align_corners=align_corners, res5_extra=res5_extra, res5_tap=res5_tap
    )
