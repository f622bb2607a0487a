"""The R-FCN detector's parts, shared by R-FCN (:mod:`zoo.models.rfcn`) and CoupleNet
(:mod:`zoo.models.couplenet`, whose local branch is R-FCN's head).

:class:`RFCNBackbone` (MSRA ResNet, res5 dilated: C4 and C5 at stride 16), :class:`RFCNRPNHead` (the
reference RPN head on C4, 2-way softmax objectness), :class:`RFCNRoIHeads` (the position-sensitive RoI head
on C5 with the optional LS-DFN branch, deformable PS RoI pooling and OHEM), :func:`ps_roi_vote` (PS RoI
pooling + average voting), :func:`inclusive_roi_rows`, and :class:`RFCN`, which :func:`rfcn_detector` builds
around a head type. What they compute, the reference configuration and the interpretation choices: the
module docstring of :mod:`zoo.models.rfcn`.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import ps_roi_pool

from zoo.data.coco import COCO_IDS
from zoo.errors import InputError
from zoo.layers.anchors import DeviceAnchorGenerator
from zoo.layers.lsdfn_branch import LSDFNBranch
from zoo.layers.resnet import dcn_conv2_factory, resnet
from zoo.ops.deform_ps_roi_pool import DeformPSRoIPool

__all__ = ["COCO_NUM_CLASSES", "PIXEL_MEANS_RGB", "RFCN", "RFCNBackbone", "RFCNRPNHead", "RFCNRoIHeads",
           "inclusive_roi_rows", "ps_roi_vote", "rfcn_detector", "rfcn_detector_args"]

#: the reference's RGB pixel means on the 0..255 scale (``PIXEL_MEANS`` is stored BGR: 103.06, 115.90, 123.15)
PIXEL_MEANS_RGB = (123.15, 115.90, 103.06)
COCO_NUM_CLASSES = len(COCO_IDS) + 1  # 81: background + 80 contiguous classes


def ps_roi_vote(score_maps: Tensor, rois: Tensor | list[Tensor], group_size: int, spatial_scale: float) -> Tensor:
    """Position-sensitive RoI pooling + average voting (R-FCN eq. 1-2).

    score_maps (B, k*k*C, H, W) with channel (c*k + i)*k + j the score map of class/coordinate c for bin
    (i, j); rois (K, 5) rows (batch_index, x1, y1, x2, y2) or a list of (K_b, 4) boxes per image, in
    pixels of the map / ``spatial_scale``. Returns (K, C): for each RoI and c, the mean over the k x k bins
    of the average of map (c, i, j) inside bin (i, j) (``torchvision.ops.ps_roi_pool``).
    """
    return ps_roi_pool(score_maps, rois, group_size, spatial_scale).mean(dim=(2, 3))


def inclusive_roi_rows(boxes: list[Tensor]) -> Tensor:
    """Per-image (K_i, 4) torchvision boxes ((x2, y2) exclusive) -> (K, 5) rows (batch_index, x1, y1,
    x2 - 1, y2 - 1): py-faster-rcnn's inclusive convention, which Deformable-ConvNets' kernels expect."""
    return torch.cat([torch.cat([torch.full_like(b[:, :1], i), b[:, :2], b[:, 2:] - 1], dim=1)
                      for i, b in enumerate(boxes)])


class RFCNBackbone(nn.Module):
    """ResNet body returning ``OrderedDict(res4=C4, res5=C5)``: (B, 3, H, W) -> (B, 1024, H/16, W/16),
    (B, 2048, H/16, W/16) for the default ResNet-101 (res5 dilated). ``dcn``: the res5 3x3 convs are
    deformable (v1) with ``deform_groups`` offset fields (deformable R-FCN)."""

    def __init__(self, depth: int = 101, trainable_layers: int = 3, dcn: bool = False, deform_groups: int = 4) -> None:
        super().__init__()
        if not 0 <= trainable_layers <= 5:
            raise ValueError(f"trainable_layers must be in 0..5, got {trainable_layers}")
        factory = dcn_conv2_factory("dcn", stages=(4,), deform_groups=deform_groups) if dcn else None
        self.body = resnet(depth=depth, output_stride=16, dilate_first_block=True, stride_in_1x1=True,
                           norm="frozen_bn", features_only=True, out_indices=(3, 4), conv2_factory=factory)
        self.body.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)  # Caffe pool1
        self.channels = (self.body.feature_channels[3], self.body.feature_channels[4])
        trainable = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
        for name, param in self.body.named_parameters():
            if not any(name.startswith(prefix) for prefix in trainable):
                param.requires_grad_(False)

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        c4, c5 = self.body(x)
        return OrderedDict(res4=c4, res5=c5)


class RFCNRPNHead(nn.Module):
    """The reference RPN head: 3x3 conv + ReLU, 2A softmax scores (A bg, then A fg), 4A deltas.

    Takes the list of feature maps torchvision's RPN passes; returns ``([objectness (B, A, H, W)],
    [deltas (B, 4A, H, W)])`` with objectness = fg score - bg score (a logit whose sigmoid is the
    2-way softmax fg probability).
    """

    def __init__(self, in_channels: int = 1024, num_anchors: int = 12, mid_channels: int = 512) -> None:
        super().__init__()
        self.num_anchors = num_anchors
        self.conv = nn.Conv2d(in_channels, mid_channels, 3, padding=1)
        self.cls_logits = nn.Conv2d(mid_channels, 2 * num_anchors, 1)
        self.bbox_pred = nn.Conv2d(mid_channels, 4 * num_anchors, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Gaussian std 0.01, zero bias (the reference's fillers)."""
        for m in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)

    def forward(self, x: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        objectness, deltas = [], []
        a = self.num_anchors
        for feature in x:
            t = F.relu(self.conv(feature))
            scores = self.cls_logits(t)
            objectness.append(scores[:, a:] - scores[:, :a])
            deltas.append(self.bbox_pred(t))
        return objectness, deltas


class _C4RegionProposalNetwork(RegionProposalNetwork):
    """torchvision's RPN reading only the ``res4`` feature map of the backbone's dict."""

    def forward(self, images, features: Mapping[str, Tensor], targets=None):  # type: ignore[override]
        return super().forward(images, OrderedDict(res4=features["res4"]), targets)


class RFCNRoIHeads(RoIHeads):
    """R-FCN head on ``features["res5"]`` (+ optional LS-DFN branch, optional deformable PS RoI pooling)
    with torchvision's RoI sampling, losses and post-processing (see :mod:`zoo.models.rfcn`).

    ``forward(features, proposals, image_shapes, targets)``: proposals is a list of (K_i, 4) boxes in
    the transformed images' pixels. Returns ``(detections, losses)`` as torchvision's ``RoIHeads``.
    """

    def __init__(self, in_channels: int = 2048, num_classes: int = COCO_NUM_CLASSES, *, group_size: int = 7,
                 mid_channels: int = 1024, spatial_scale: float = 1.0 / 16, class_agnostic: bool = True,
                 lsdfn: Mapping[str, Any] | None = None, deform_psroi: bool = False, sample_per_part: int = 4,
                 trans_std: float = 0.1, ohem_rois: int | None = 128,
                 fg_iou_thresh: float = 0.5, bg_iou_thresh: float = 0.5, batch_size_per_image: int = 300,
                 positive_fraction: float = 0.25, bbox_reg_weights: tuple[float, ...] = (10.0, 10.0, 5.0, 5.0),
                 score_thresh: float = 1e-3, nms_thresh: float = 0.3, detections_per_img: int = 100) -> None:
        super().__init__(None, None, None, fg_iou_thresh, bg_iou_thresh, batch_size_per_image, positive_fraction,
                         bbox_reg_weights, score_thresh, nms_thresh, detections_per_img)
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
        if ohem_rois is not None and ohem_rois < 1:
            raise ValueError(f"ohem_rois must be a positive int or None, got {ohem_rois}")
        self.num_classes, self.group_size, self.spatial_scale = num_classes, group_size, spatial_scale
        self.class_agnostic, self.ohem_rois = class_agnostic, ohem_rois
        self.lsdfn: LSDFNBranch | None = None
        extra = 0
        if lsdfn is not None:
            args = dict(lsdfn)
            if "in_channels" in args:
                raise ValueError("lsdfn: in_channels is set by the model (the res5 channels)")
            self.lsdfn = LSDFNBranch(in_channels, **args)
            extra = self.lsdfn.out_channels
        kk = group_size * group_size
        self.conv_new_1 = nn.Conv2d(in_channels + extra, mid_channels, 1)
        self.rfcn_cls = nn.Conv2d(mid_channels, kk * num_classes, 1)
        box_outputs = 4 * (2 if class_agnostic else num_classes)
        self.rfcn_bbox = nn.Conv2d(mid_channels, kk * box_outputs, 1)
        self.rfcn_cls_pool: DeformPSRoIPool | None = None
        self.rfcn_bbox_pool: DeformPSRoIPool | None = None
        if deform_psroi:  # the reference: one offset field per class for cls, one shared one for bbox
            pool = {"group_size": group_size, "sample_per_part": sample_per_part, "trans_std": trans_std,
                    "spatial_scale": spatial_scale}
            self.rfcn_cls_pool = DeformPSRoIPool(mid_channels, num_classes, offset_classes=num_classes, **pool)
            self.rfcn_bbox_pool = DeformPSRoIPool(mid_channels, box_outputs, offset_classes=1, **pool)
        self.reset_parameters()
        # COCO: contiguous class k <-> COCO category id (row 0 = background)
        self._coco = num_classes == COCO_NUM_CLASSES

    def reset_parameters(self) -> None:
        """Gaussian std 0.01, zero bias for the new convs (the reference); LS-DFN and the deformable PS
        poolings keep their own init (zero offset convs, as the reference)."""
        for m in (self.conv_new_1, self.rfcn_cls, self.rfcn_bbox):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------------------------- scores
    def head_features(self, c5: Tensor) -> Tensor:
        """ReLU(conv_new_1([C5, LS-DFN(C5)])): (B, 2048, h, w) -> (B, 1024, h, w)."""
        if self.lsdfn is not None:
            c5 = torch.cat([c5, self.lsdfn(c5)], 1)
        return F.relu(self.conv_new_1(c5))

    def predict(self, c5: Tensor, proposals: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Class logits (K, C+1) and box deltas (K, (C+1)*4) for the K = sum K_i proposals.

        Class-agnostic deltas (the fg half of the 8 pooled values) are repeated for every class so that
        torchvision's decoding and loss see class-specific layout; the bg half is never used (as the
        reference, which reads ``bbox_pred[:, 4:8]``).
        """
        cls, box = self.roi_scores(self.head_features(c5), proposals)
        if self.class_agnostic:
            box = box[:, 4:8].repeat(1, self.num_classes)
        return cls, box

    def roi_scores(self, x: Tensor, proposals: list[Tensor]) -> tuple[Tensor, Tensor]:
        """The R-FCN (CoupleNet: local) branch on the head features x (B, 1024, h, w): PS RoI pooling and
        voting of ``rfcn_cls`` and ``rfcn_bbox`` -> (K, C+1) scores and (K, 8) (class-agnostic) or
        (K, 4(C+1)) deltas."""
        if self.rfcn_cls_pool is not None and self.rfcn_bbox_pool is not None:
            rows = inclusive_roi_rows(proposals).to(x.dtype)
            cls = self.rfcn_cls_pool(self.rfcn_cls(x), rows, x).mean(dim=(2, 3))
            box = self.rfcn_bbox_pool(self.rfcn_bbox(x), rows, x).mean(dim=(2, 3))
        else:
            rois = [p.to(x.dtype) for p in proposals]
            cls = ps_roi_vote(self.rfcn_cls(x), rois, self.group_size, self.spatial_scale)
            box = ps_roi_vote(self.rfcn_bbox(x), rois, self.group_size, self.spatial_scale)
        return cls, box

    # ------------------------------------------------------------------------------------- labels
    def _ids(self, device: torch.device) -> Tensor:
        return torch.tensor((0,) + COCO_IDS, dtype=torch.int64, device=device)

    def _targets_to_contiguous(self, targets: list[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
        """COCO category ids -> contiguous 1..80 (training only; checks the ids, which syncs)."""
        out = []
        for i, t in enumerate(targets):
            labels = t["labels"]
            lut = torch.full((max(COCO_IDS) + 1,), -1, dtype=torch.int64, device=labels.device)
            lut[self._ids(labels.device)] = torch.arange(COCO_NUM_CLASSES, device=labels.device)
            bad = (labels < 1) | (labels > max(COCO_IDS))
            mapped = lut[labels.clamp(0, max(COCO_IDS))]
            if bool((bad | (mapped < 1)).any()):
                raise InputError(f"targets[{i}]['labels'] must be COCO category ids of the 80 COCO 2017 "
                                 f"classes (model num_classes=81), got {sorted(set(labels.tolist()))}")
            out.append({**t, "labels": mapped})
        return out

    # ------------------------------------------------------------------------------------- forward
    def forward(self, features: Mapping[str, Tensor], proposals: list[Tensor],  # type: ignore[override]
                image_shapes: list[tuple[int, int]], targets: list[dict[str, Tensor]] | None = None
                ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        if "res5" not in features:
            raise InputError(f"R-FCN head needs the 'res5' feature map, got {list(features)}")
        c5 = features["res5"]
        if self.training:
            if targets is None:
                raise InputError("R-FCN training needs targets: a list of dicts with 'boxes' and 'labels'")
            if self._coco:
                targets = self._targets_to_contiguous(targets)
            proposals, _, labels, regression_targets = self.select_training_samples(proposals, targets)
            class_logits, box_regression = self.predict(c5, proposals)
            labels_all, targets_all = torch.cat(labels), torch.cat(regression_targets)
            if self.ohem_rois is not None:
                keep = self._hard_examples(class_logits, box_regression, labels_all, targets_all, len(proposals))
                class_logits, box_regression = class_logits[keep], box_regression[keep]
                labels_all, targets_all = labels_all[keep], targets_all[keep]
            loss_cls, loss_box = fastrcnn_loss(class_logits, box_regression, [labels_all], [targets_all])
            return [], {"loss_classifier": loss_cls, "loss_box_reg": loss_box}

        class_logits, box_regression = self.predict(c5, proposals)
        boxes, scores, labels = self.postprocess_detections(class_logits, box_regression, proposals, image_shapes)
        if self._coco:
            ids = self._ids(class_logits.device)
            labels = [ids[lab] for lab in labels]
        return [{"boxes": b, "scores": s, "labels": lab} for b, s, lab in zip(boxes, scores, labels)], {}

    def _hard_examples(self, class_logits: Tensor, box_regression: Tensor, labels: Tensor, targets: Tensor,
                       num_images: int) -> Tensor:
        """Indices of the ``ohem_rois * num_images`` RoIs with the largest cls + box loss (OHEM)."""
        with torch.no_grad():
            loss = F.cross_entropy(class_logits, labels, reduction="none")
            deltas = box_regression.reshape(labels.shape[0], -1, 4)
            picked = deltas[torch.arange(labels.shape[0], device=labels.device), labels]
            box = F.smooth_l1_loss(picked, targets, beta=1 / 9, reduction="none").sum(1)
            loss = loss + box * (labels > 0)
            k = min(self.ohem_rois * num_images, labels.shape[0])
            return loss.topk(k).indices


class RFCN(GeneralizedRCNN):
    """R-FCN: torchvision's ``GeneralizedRCNN`` with :class:`RFCNBackbone`, an RPN on C4 and
    :class:`RFCNRoIHeads` (see :mod:`zoo.models.rfcn` for inputs and outputs)."""

    def inserted_input_channels(self) -> dict[str, tuple[int, int, int]]:
        """Where the LS-DFN output enters plain R-FCN: ``{parameter: (dim, start, count)}``. Its C'
        channels follow C5's in ``conv_new_1``; zero there, R-FCN + LS-DFN computes what R-FCN does
        (see :func:`zoo.weights.expand_state_dict`)."""
        heads = self.roi_heads
        if heads.lsdfn is None:
            return {}
        count = heads.lsdfn.out_channels
        return {"roi_heads.conv_new_1.weight": (1, heads.conv_new_1.in_channels - count, count)}


def rfcn_detector(heads_type: type[RFCNRoIHeads], heads_args: Mapping[str, Any], *, depth: int, num_classes: int,
              dcn: bool, deform_groups: int, trainable_layers: int, min_size: int, max_size: int,
              image_mean: Sequence[float] | None, image_std: Sequence[float] | None, size_divisible: int,
              anchor_sizes: Sequence[int], aspect_ratios: Sequence[float], rpn_pre_nms_top_n_train: int,
              rpn_pre_nms_top_n_test: int, rpn_post_nms_top_n_train: int, rpn_post_nms_top_n_test: int,
              rpn_nms_thresh: float, rpn_batch_size_per_image: int, box_batch_size_per_image: int,
              box_score_thresh: float, box_nms_thresh: float, box_detections_per_img: int,
              default_mean: Sequence[float] = PIXEL_MEANS_RGB) -> RFCN:
    """Transform, :class:`RFCNBackbone`, the reference RPN on C4 and ``heads_type`` (R-FCN or CoupleNet)."""
    mean = list(image_mean) if image_mean is not None else [m / 255.0 for m in default_mean]
    std = list(image_std) if image_std is not None else [1.0 / 255.0] * 3
    transform = GeneralizedRCNNTransform(min_size, max_size, mean, std, size_divisible=size_divisible)
    backbone = RFCNBackbone(depth, trainable_layers, dcn=dcn, deform_groups=deform_groups)
    c4, c5 = backbone.channels
    anchors = DeviceAnchorGenerator((tuple(anchor_sizes),), (tuple(aspect_ratios),))
    rpn = _C4RegionProposalNetwork(
        anchors, RFCNRPNHead(c4, anchors.num_anchors_per_location()[0]), 0.7, 0.3, rpn_batch_size_per_image, 0.5,
        {"training": rpn_pre_nms_top_n_train, "testing": rpn_pre_nms_top_n_test},
        {"training": rpn_post_nms_top_n_train, "testing": rpn_post_nms_top_n_test}, rpn_nms_thresh)
    heads = heads_type(c5, num_classes, batch_size_per_image=box_batch_size_per_image, score_thresh=box_score_thresh,
                       nms_thresh=box_nms_thresh, detections_per_img=box_detections_per_img, **heads_args)
    return RFCN(backbone, rpn, heads, transform)


def rfcn_detector_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor arguments :func:`rfcn_detector` takes directly: a constructor's ``locals()`` without the
    head's arguments (and the ``heads`` dict built from them)."""
    skip = {"heads", "lsdfn", "deform_psroi", "class_agnostic", "ohem_rois", "global_channels"}
    return {k: v for k, v in args.items() if k not in skip}
