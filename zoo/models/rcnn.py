"""Faster / Mask R-CNN with deformable convolutions and deformable RoI pooling (Deformable ConvNets v1/v2).

Papers: Dai et al., "Deformable Convolutional Networks", ICCV 2017 (https://arxiv.org/abs/1703.06211);
Zhu et al., "Deformable ConvNets v2: More Deformable, Better Results", CVPR 2019
(https://arxiv.org/abs/1811.11168). Configuration of mmdetection's ``configs/dcn`` (and ``dcnv2``)
COCO models: ``faster_rcnn_r50_fpn_{dconv,mdconv}_c3-c5``, ``faster_rcnn_r50_fpn_{dpool,mdpool}``,
``mask_rcnn_r50_fpn_{dconv,mdconv}_c3-c5``.

Built on torchvision's detection framework: ``GeneralizedRCNNTransform`` (ImageNet normalisation,
shorter side ``min_size`` (800) with the longer side capped at ``max_size`` (1333), batch padding to
32), ``AnchorGenerator`` (sizes 32..512 on P2..P6, ratios 0.5/1/2), ``RPNHead`` / ``RegionProposalNetwork``,
``RoIHeads`` with ``TwoMLPHead`` + ``FastRCNNPredictor`` (box coder weights 10/10/5/5, i.e. mmdet's
target stds 0.1/0.1/0.2/0.2), ``MaskRCNNHeads`` + ``MaskRCNNPredictor``, NMS and the loss functions.
Only the backbone convs and the RoI pooler are zoo's.

Inputs/outputs are torchvision's: ``model(images)`` with a list of 3 x H x W float images in [0, 1]
(any sizes); in eval mode a list of dicts ``{"boxes" (K, 4) x1y1x2y2 in input pixels, "scores" (K,),
"labels" (K,) int64 COCO category ids 1..90}`` (+ ``"masks"`` (K, 1, H, W) probabilities for Mask
R-CNN); in training mode ``model(images, targets)`` returns the loss dict.

Interpretation choices:
- Backbone: zoo's ResNet (torchvision keys, stride on the 3x3) with ``FrozenBatchNorm2d`` (mmdet trains
  with BN frozen, ``norm_eval``), stem and layer1 frozen (mmdet ``frozen_stages=1`` = torchvision
  ``trainable_layers=3``), wrapped by torchvision's ``BackboneWithFPN`` (keys ``backbone.body.*``,
  ``backbone.fpn.*``, as ``fasterrcnn_resnet50_fpn``), FPN with a max-pooled P6.
- ``dcn="dcn"|"mdcn"``: every Bottleneck conv2 of ``dcn_stages`` (default layer2-4, mmdet
  ``stage_with_dcn=(False, True, True, True)``) is a :class:`zoo.ops.deform_conv.DeformConv2d` /
  :class:`~zoo.ops.deform_conv.ModulatedDeformConv2d` with 1 deformable group and no bias (mmdet's
  Bottleneck builds conv2 with ``bias=False``), offset convs zero-initialised.
- RoI pooling: mmdet pools with aligned RoIAlign (half-pixel offset, ``aligned=True``) and
  ``sampling_ratio=0``; torchvision's ``MultiScaleRoIAlign`` uses ``aligned=False``. To run mmdet
  checkpoints as trained, every entry uses :class:`MultiScaleDeformRoIPool` (box head 7x7, mask head
  14x14) with mmdet's level rule (finest_scale 56, which equals torchvision's 224/k0=4 rule).
  ``roi_pool="dpool"|"mdpool"`` makes the box pooler deformable: one
  :class:`zoo.ops.deform_roi_pool.DeformRoIPool` / ``ModulatedDeformRoIPool`` per FPN level, as
  mmdet's ``SingleRoIExtractor`` (keys ``roi_heads.box_roi_pool.roi_layers.{i}.offset_fc`` /
  ``mask_fc`` — mmdet's names under torchvision's module path), gamma 0.1.
- Classes: torchvision's convention, ``num_classes=91`` with background 0 and COCO category ids
  1..90 (ids absent from COCO 2017 are unused rows). ``zoo.converters.mmdet_rcnn`` maps mmdet's 80
  contiguous classes (background last) into these rows.
- The anchor generator recomputes its cell anchors at forward time (torchvision's keeps them as plain
  tensors created in ``__init__``, which would stay on the meta device after a meta build).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import roi_align
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from zoo.archs import register_arch
from zoo.errors import InputError
from zoo.layers import DeviceAnchorGenerator, dcn_conv2_factory, freeze_stages, resnet
from zoo.ops.deform_roi_pool import DeformRoIPool, ModulatedDeformRoIPool

__all__ = ["MultiScaleDeformRoIPool", "faster_rcnn", "mask_rcnn", "resnet_fpn_backbone"]

_POOLS = ("roi_align", "dpool", "mdpool")


# ------------------------------------------------------------------------------------------- RoI pooling
class MultiScaleDeformRoIPool(nn.Module):
    """Multi-level RoI pooling for torchvision's ``RoIHeads`` with mmdet's level rule and aligned pooling.

    Drop-in for ``torchvision.ops.MultiScaleRoIAlign`` (same call ``(features, boxes, image_shapes)``).
    Each RoI goes to level ``floor(log2(sqrt(w * h) / finest_scale + 1e-6))`` clamped to the levels
    (mmdet's ``SingleRoIExtractor.map_roi_levels``; with finest_scale 56 this is torchvision's FPN rule
    ``floor(4 + log2(sqrt(wh) / 224))``), and is pooled on that level's map with spatial scale
    ``1 / stride``:
    - ``kind="roi_align"``: ``torchvision.ops.roi_align(aligned=True)`` (mmcv's RoIAlign), no parameters;
    - ``kind="dpool"`` / ``"mdpool"``: one :class:`DeformRoIPool` / :class:`ModulatedDeformRoIPool` per
      level (``roi_layers.{i}``, each with its own offset fcs, as mmdet), gamma 0.1. At zero offsets
      (fresh init) ``dpool`` equals ``roi_align``; ``mdpool`` equals 0.5 x ``roi_align``.

    features: mapping name -> (N, C, H_l, W_l) (only ``featmap_names`` are used, in that order, with
    ``strides``); boxes: list of (K_n, 4) x1y1x2y2 in image pixels; returns (sum K_n, C, ph, pw).
    Grouping RoIs by level uses ``torch.where`` (data-dependent sizes, like torchvision's pooler).
    """

    def __init__(self, featmap_names: Sequence[str], output_size: int, strides: Sequence[int], *,
                 kind: str = "roi_align", channels: int = 256, sampling_ratio: int = 0, gamma: float = 0.1,
                 finest_scale: float = 56.0, deform_fc_channels: int = 1024) -> None:
        super().__init__()
        if kind not in _POOLS:
            raise ValueError(f"kind must be one of {_POOLS}, got {kind!r}")
        if len(featmap_names) != len(strides):
            raise ValueError(f"need one stride per feature map, got {list(featmap_names)} and {list(strides)}")
        self.featmap_names = list(featmap_names)
        self.output_size = (int(output_size), int(output_size))
        self.strides = tuple(int(s) for s in strides)
        self.kind, self.channels = kind, int(channels)
        self.sampling_ratio, self.gamma, self.finest_scale = int(sampling_ratio), float(gamma), float(finest_scale)
        if kind == "roi_align":
            self.roi_layers = None
        else:
            cls = DeformRoIPool if kind == "dpool" else ModulatedDeformRoIPool
            self.roi_layers = nn.ModuleList(
                cls(output_size, channels, deform_fc_channels, spatial_scale=1.0 / s, sampling_ratio=sampling_ratio,
                    gamma=gamma) for s in self.strides)

    def map_levels(self, rois: Tensor) -> Tensor:
        """Level index (K,) int64 of each RoI row (batch_index, x1, y1, x2, y2) (mmdet's rule)."""
        scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
        levels = torch.floor(torch.log2(scale / self.finest_scale + 1e-6))
        return levels.clamp(min=0, max=len(self.strides) - 1).long()

    def forward(self, features: "OrderedDict[str, Tensor]", boxes: list[Tensor],
                image_shapes: list[tuple[int, int]] | None = None) -> Tensor:
        del image_shapes  # strides are fixed by the backbone; nothing is inferred from the image sizes
        missing = [n for n in self.featmap_names if n not in features]
        if missing:
            raise InputError(f"RoI pooler needs feature maps {self.featmap_names}, missing {missing}")
        feats = [features[n] for n in self.featmap_names]
        rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)], dim=0)
        levels = self.map_levels(rois)
        first = feats[0]
        out = first.new_zeros((rois.shape[0], first.shape[1], *self.output_size))
        for level, (feat, stride) in enumerate(zip(feats, self.strides)):
            idx = torch.where(levels == level)[0]
            level_rois = rois[idx].to(feat.dtype)
            if self.roi_layers is None:
                pooled = roi_align(feat, level_rois, self.output_size, spatial_scale=1.0 / stride,
                                   sampling_ratio=self.sampling_ratio, aligned=True)
            else:
                pooled = self._deform_pool(self.roi_layers[level], feat, level_rois, stride)
            out[idx] = pooled.to(out.dtype)
        return out

    def _deform_pool(self, layer: DeformRoIPool, feat: Tensor, rois: Tensor, stride: int) -> Tensor:
        """``layer(feat, rois)``; with the adaptive grid (``sampling_ratio <= 0``) the RoIs are pooled in
        groups of equal per-RoI grid size. The op visits max(grid_h) x max(grid_w) sample points for every
        RoI of a call, so one long-and-thin RoI would make all RoIs of the level pay for its grid;
        grouping (one host sync) gives each RoI its own cost. Results are identical (RoIs are pooled
        independently)."""
        if self.sampling_ratio > 0 or rois.shape[0] < 2:
            return layer(feat, rois)
        ph, pw = self.output_size
        grid_h = torch.ceil((rois[:, 4] - rois[:, 2]) / (stride * ph)).clamp(min=1)
        grid_w = torch.ceil((rois[:, 3] - rois[:, 1]) / (stride * pw)).clamp(min=1)
        groups, inverse = torch.unique(grid_h.long() * 65536 + grid_w.long(), return_inverse=True)
        if groups.numel() == 1:
            return layer(feat, rois)
        out = feat.new_empty((rois.shape[0], feat.shape[1], ph, pw))
        for g in range(groups.numel()):
            idx = torch.where(inverse == g)[0]
            out[idx] = layer(feat, rois[idx]).to(out.dtype)
        return out

    def extra_repr(self) -> str:
        return (f"kind={self.kind!r}, featmap_names={self.featmap_names}, output_size={self.output_size}, "
                f"strides={self.strides}, sampling_ratio={self.sampling_ratio}, finest_scale={self.finest_scale}")


# ------------------------------------------------------------------------------------------- backbone
def resnet_fpn_backbone(*, depth: int = 50, dcn: str | None = None, dcn_stages: Sequence[int] = (2, 3, 4),
                        deform_groups: int = 1, trainable_layers: int = 3, out_channels: int = 256) -> BackboneWithFPN:
    """zoo ResNet (frozen BN, optional deformable conv2) + torchvision FPN with P6 max-pool.

    Returns torchvision's ``BackboneWithFPN``: input (B, 3, H, W) -> OrderedDict '0'..'3', 'pool'
    of (B, out_channels, H / s, W / s) for s = 4, 8, 16, 32, 64.
    """
    factory = dcn_conv2_factory(dcn, dcn_stages, deform_groups) if dcn is not None else None
    body = resnet(depth=depth, norm="frozen_bn", conv2_factory=factory, features_only=True, out_indices=(1, 2, 3, 4))
    in_channels = list(body.feature_channels[1:])
    freeze_stages(body, trainable_layers)
    return BackboneWithFPN(body, {f"layer{i}": str(i - 1) for i in range(1, 5)}, in_channels, out_channels,
                           extra_blocks=LastLevelMaxPool())


def _detector_parts(depth: int, dcn: str | None, dcn_stages: Sequence[int], roi_pool: str,
                    trainable_layers: int, sampling_ratio: int,
                    deform_fc_channels: int) -> tuple[dict[str, Any], MultiScaleDeformRoIPool]:
    if roi_pool not in _POOLS:
        raise ValueError(f"roi_pool must be one of {_POOLS}, got {roi_pool!r}")
    backbone = resnet_fpn_backbone(depth=depth, dcn=dcn, dcn_stages=dcn_stages, trainable_layers=trainable_layers)
    anchors = DeviceAnchorGenerator(((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5)
    names, strides = ["0", "1", "2", "3"], (4, 8, 16, 32)
    box_pool = MultiScaleDeformRoIPool(names, 7, strides, kind=roi_pool, channels=backbone.out_channels,
                                       sampling_ratio=sampling_ratio, deform_fc_channels=deform_fc_channels)
    return {"backbone": backbone, "rpn_anchor_generator": anchors}, box_pool


@register_arch("faster_rcnn")
def faster_rcnn(*, depth: int = 50, num_classes: int = 91, dcn: str | None = None,
                dcn_stages: Sequence[int] = (2, 3, 4), roi_pool: str = "roi_align", sampling_ratio: int = 0,
                deform_fc_channels: int = 1024, trainable_layers: int = 3, min_size: int = 800,
                max_size: int = 1333, **detector_kwargs: Any) -> FasterRCNN:
    """torchvision Faster R-CNN on a ResNet-FPN with deformable conv2 (``dcn``) and/or deformable RoI
    pooling (``roi_pool``, offset fcs of width ``deform_fc_channels``); see the module docstring.
    ``sampling_ratio`` of the RoI poolers: 0 = adaptive (mmdet). ``detector_kwargs`` go to torchvision's
    ``FasterRCNN`` (e.g. ``box_score_thresh``, ``rpn_post_nms_top_n_test``)."""
    parts, box_pool = _detector_parts(depth, dcn, dcn_stages, roi_pool, trainable_layers, sampling_ratio,
                                     deform_fc_channels)
    model = FasterRCNN(num_classes=num_classes, min_size=min_size, max_size=max_size, **parts, **detector_kwargs)
    model.roi_heads.box_roi_pool = box_pool  # torchvision's __init__ type-checks for MultiScaleRoIAlign
    return model


@register_arch("mask_rcnn")
def mask_rcnn(*, depth: int = 50, num_classes: int = 91, dcn: str | None = None,
              dcn_stages: Sequence[int] = (2, 3, 4), roi_pool: str = "roi_align", sampling_ratio: int = 0,
              deform_fc_channels: int = 1024, trainable_layers: int = 3, min_size: int = 800,
              max_size: int = 1333, **detector_kwargs: Any) -> MaskRCNN:
    """torchvision Mask R-CNN on a ResNet-FPN with deformable conv2 (``dcn``); the mask pooler is
    aligned RoIAlign 14x14 (mmdet). Other arguments as :func:`faster_rcnn`."""
    parts, box_pool = _detector_parts(depth, dcn, dcn_stages, roi_pool, trainable_layers, sampling_ratio,
                                     deform_fc_channels)
    model = MaskRCNN(num_classes=num_classes, min_size=min_size, max_size=max_size, **parts, **detector_kwargs)
    # torchvision's __init__ type-checks the poolers for MultiScaleRoIAlign, so they are swapped afterwards
    model.roi_heads.box_roi_pool = box_pool
    model.roi_heads.mask_roi_pool = MultiScaleDeformRoIPool(
        ["0", "1", "2", "3"], 14, (4, 8, 16, 32), kind="roi_align", channels=parts["backbone"].out_channels,
        sampling_ratio=sampling_ratio)
    return model
