"""CondInst: instance segmentation with conditional (dynamic) convolutions.

Paper: Tian, Shen, Chen, "Conditional Convolutions for Instance Segmentation", ECCV 2020,
https://arxiv.org/abs/2003.05664. Configuration of AdelaiDet's ``configs/CondInst/MS_R_{50,101}_*``
(``adet/modeling/condinst``, ``adet/modeling/fcos``); mmdetection's
``condinst_r50_fpn_ms-poly-90k_coco_instance`` is the same network with a PyTorch-style backbone.

What it computes:
- Backbone: zoo's ResNet-50/101 (``FrozenBatchNorm2d``, stem and layer1 frozen: detectron2
  ``FREEZE_AT=2`` / mmdet ``frozen_stages=1``) + torchvision FPN on C3-C5 with P6/P7 from P5
  (``LastLevelP6P7(256, 256)``: P6 = conv3x3/2(P5), P7 = conv3x3/2(ReLU(P6))), all 256 channels,
  strides 8..128, in torchvision's ``BackboneWithFPN`` (keys ``backbone.body.*``, ``backbone.fpn.*``).
- FCOS head (:class:`FCOSHead`, shared by P3-P7): ``cls_tower`` and ``bbox_tower`` of 4 x (3x3 conv
  with bias, GroupNorm(32), ReLU); ``cls_logits`` (3x3, num_classes, prior-probability 0.01 bias),
  ``bbox_pred`` (3x3, 4 distances l, t, r, b) scaled by a learnable per-level ``Scale`` and passed through
  ReLU (AdelaiDet's "improved FCOS", ``USE_SCALE``/``USE_RELU``; distances are in units of the level
  stride), ``ctrness`` (3x3, 1) on the box tower, and the ``controller`` (3x3 -> 169) on the box tower,
  whose output at a location is the parameters of that instance's dynamic mask head.
- Mask branch (:class:`MaskBranch`, AdelaiDet's ``MaskBranch``): ``refine`` 3x3 conv 256->128 + BN +
  ReLU on P3, P4, P5, the coarser two upsampled to P3 with AdelaiDet's ``aligned_bilinear`` and summed;
  ``tower`` of 4 x (3x3 conv 128 + BN + ReLU) and a 1x1 conv to 8 channels: mask features at stride 8.
- Dynamic mask head: :class:`zoo.ops.dynamic_mask_head.DynamicMaskHead` (3 layers, 8 channels,
  relative coordinates divided by the sizes of interest 64..1024 of the instance's FPN level), mask
  logits at ``mask_out_stride`` 4.

Inference (AdelaiDet ``FCOSOutputs.predict_proposals`` with CondInst's ``THRESH_WITH_CTR=True``):
per level and image, score = sigmoid(cls) * sigmoid(ctrness); candidates with score > 0.05
(``thresh_with_ctr=False``: sigmoid(cls) > 0.05), at most the 1000 best per level; box = location -/+
distance * stride; reported score = sqrt(score); class-aware NMS at IoU 0.6 over all levels
(``torchvision.ops.batched_nms``), the 100 best kept. The dynamic head then runs on every kept
detection; its mask probabilities (sigmoid) are upsampled by ``aligned_bilinear`` from stride 4 to the
padded batch, cropped to the resized image and resized (bilinear, ``align_corners=False``) to the size
of the image given to the model. Boxes are rescaled to that size, clipped, and empty boxes dropped
(detectron2's ``Boxes.clip`` / ``nonempty``). Masks are NOT thresholded here (the ``detection``
postprocess binarises them at 0.5, AdelaiDet's ``mask_threshold``).

Inputs/outputs follow torchvision's detectors (and the ``detection`` presets of :mod:`zoo.tasks.object_detection`):
``model(images)`` with a list of 3 x H x W RGB float images in [0, 1] (or a B x 3 x H x W tensor);
eval mode returns a list of dicts ``{"boxes" (K, 4) x1y1x2y2 input pixels, "scores" (K,), "labels" (K,)
int64, "masks" (K, 1, H, W) probabilities}``, sorted by score. Resizing (shorter side 800, longer
side <= 1333), normalisation and padding to 32 happen inside, in torchvision's
``GeneralizedRCNNTransform``.

Interpretation choices:
- Classes: 80 contiguous COCO classes (AdelaiDet, mmdet). Output labels are COCO category ids
  (``zoo.data.coco.COCO_IDS[k]`` for class k; e.g. 0 -> 1 person, 79 -> 90 toothbrush), as
  the R-CNN entries, so detection evaluation is uniform. ``label_ids`` overrides the table; with
  ``num_classes != 80`` and no table, labels are ``class index + 1`` (torchvision's convention).
- ``style="caffe"`` (default, AdelaiDet's MSRA ImageNet backbones): stride on the first 1x1 conv of
  a bottleneck, and normalisation ``(x - (0.485, 0.456, 0.406)) * 255`` (detectron2's
  ``PIXEL_MEAN`` on 0..255 pixels with ``PIXEL_STD`` 1). detectron2 feeds BGR; the
  ``adelaidet-condinst`` converter reverses the input channels of the stem conv, so the model takes RGB
  and computes the same. ``style="pytorch"`` (mmdet): stride on the 3x3 conv, ImageNet mean/std.
  ``image_mean`` / ``image_std`` (on [0, 1] pixels) override either.
- Resizing uses ``F.interpolate`` on float images (torchvision) instead of PIL / OpenCV on uint8
  (detectron2 / mmdet); the top-100 cut keeps exactly 100 (AdelaiDet's ``kthvalue`` keeps ties).

Training (``model.train()``; ``model(images, targets)`` returns a dict of losses, as torchvision's detectors):
``targets`` is one dict per image, ``"boxes"`` (N, 4) x1y1x2y2 input pixels, ``"labels"`` (N,) int64 in the
output label space (COCO category ids for the 80-class model, ``label_ids``), ``"masks"`` (N, H, W) bool or
0/1 at the image's size. ``GeneralizedRCNNTransform`` resizes images, boxes and masks (nearest) as in
eval, the masks are zero-padded to the padded batch. The losses and their defaults are AdelaiDet's
(``adet/modeling/fcos/fcos_outputs.py``, ``adet/modeling/condinst/condinst.py`` and
``dynamic_mask_head.py``, ``adet/config/defaults.py``, ``configs/CondInst/Base-CondInst.yaml``, all at
aim-uofa/AdelaiDet@36721221eb572256206e60df6e9095ed00b2e08c):

- FCOS targets (:func:`~zoo.layers.fcos.fcos_targets`, per image over the locations of P3-P7) and the
  losses ``loss_fcos_cls``, ``loss_fcos_loc`` and ``loss_fcos_ctr`` (:func:`~zoo.layers.fcos.fcos_losses`):
  AdelaiDet's, with its defaults, as :mod:`zoo.layers.fcos` states them.
- ``loss_mask``: the positives are the instances of the mask head; with more than ``max_proposals``
  (500, ``Base-CondInst.yaml``'s ``MAX_PROPOSALS``) a random ``max_proposals`` of them are kept
  (``torch.randperm``), or with ``topk_proposals_per_im`` = k >= 0 (default -1 = off; ``max_proposals``
  must then be -1) each image keeps, per ground truth, the ``int(k / number of its ground truths)`` (at
  least 1) positives with the highest max-class-probability x centre-ness. Each kept one runs the dynamic mask head
  (mask logits at ``mask_out_stride`` 4) against its ground-truth mask sampled at ``[2::4, 2::4]`` of the
  padded input (``add_bitmasks``); dice loss 1 - 2 sum(p g) / (sum(p^2) + sum(g^2) + 1e-5) per
  instance, averaged (:func:`~zoo.layers.fcos.dice_loss`). No positive: 0 connected to the mask features and parameters.
  The total loss is the sum of the four (detectron2 sums the loss dict); BoxInst (``BOXINST.ENABLED``)
  and the semantic loss (``SEMANTIC_LOSS_ON``) are off, as in the CondInst configs.
- Differences from AdelaiDet: targets are flattened image-major (AdelaiDet level-major), which only
  changes which positives a ``max_proposals`` cut draws; ``get_sample_region``'s early exit (no positive
  at all in an image whose first ground truth has its centre at x = 0) is not reproduced; masks are
  resized with the image (nearest, torchvision) instead of rasterising the polygons at the new size
  (detectron2); AdelaiDet's data augmentation (multi-scale shorter side 640-800, horizontal flip)
  belongs to the data pipeline (:mod:`zoo.tasks.instance_segmentation`), not to the model. Crowd
  annotations are the caller's to drop (detectron2's dataset mapper drops them).

Smaller networks for training here: ``depth`` 18/34 (basic blocks), ``width`` (channel multiplier of the
ResNet), ``norm="bn"`` (trainable BatchNorm for a backbone trained from scratch; ``"frozen_bn"`` is
detectron2's ``FrozenBN`` for ImageNet-initialised backbones), ``fpn_channels``, ``head_convs`` (FCOS
tower depth), ``mask_branch_channels`` and ``mask_branch_convs``.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops import batched_nms, clip_boxes_to_image
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from zoo.archs import register_arch
from zoo.data.coco import COCO_IDS
from zoo.errors import InputError
from zoo.layers import dice_loss, fcos_losses, fcos_targets, freeze_stages, resnet
from zoo.ops._checks import check_shape
from zoo.ops.dynamic_mask_head import DynamicMaskHead, aligned_bilinear, compute_locations

__all__ = ["CondInst", "FCOSHead", "MaskBranch", "Scale", "condinst", "fcos_resnet_fpn_backbone"]

FPN_STRIDES = (8, 16, 32, 64, 128)
_STYLES = {  # style -> (stride_in_1x1, image_mean, image_std) on [0, 1] RGB pixels
    "caffe": (True, (0.485, 0.456, 0.406), (1 / 255.0,) * 3),
    "pytorch": (False, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


class Scale(nn.Module):
    """A learnable scalar multiplier (FCOS, one per FPN level); parameter ``scale`` of shape (1,)."""

    def __init__(self, init_value: float = 1.0) -> None:
        super().__init__()
        self.init_value = float(init_value)
        self.scale = nn.Parameter(torch.empty(1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.scale, self.init_value)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def _tower(channels: int, num_convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(32, channels), nn.ReLU()]
    return nn.Sequential(*layers)


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU())


class FCOSHead(nn.Module):
    """FCOS head with the CondInst controller (AdelaiDet ``FCOSHead`` + ``CondInst.controller``).

    ``forward(features)`` with a list of (B, C, H_l, W_l) maps returns four lists over the levels:
    class logits (B, num_classes, H_l, W_l), distances ReLU(scale_l * bbox_pred) (B, 4, H_l, W_l) in
    units of the level stride, centre-ness logits (B, 1, H_l, W_l), controller outputs
    (B, num_gen_params, H_l, W_l).
    """

    def __init__(self, in_channels: int = 256, num_classes: int = 80, num_gen_params: int = 169,
                 num_convs: int = 4, num_levels: int = 5, prior_prob: float = 0.01) -> None:
        super().__init__()
        self.num_classes, self.prior_prob = num_classes, prior_prob
        self.cls_tower = _tower(in_channels, num_convs)
        self.bbox_tower = _tower(in_channels, num_convs)
        self.cls_logits = nn.Conv2d(in_channels, num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.ctrness = nn.Conv2d(in_channels, 1, 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in range(num_levels))
        self.controller = nn.Conv2d(in_channels, num_gen_params, 3, padding=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """AdelaiDet's init: every conv N(0, 0.01) with zero bias, class bias -log((1 - p) / p)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - self.prior_prob) / self.prior_prob))

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        if len(features) != len(self.scales):
            raise InputError(f"FCOSHead takes {len(self.scales)} feature maps (P3-P7), got {len(features)}")
        logits, distances, ctrness, params = [], [], [], []
        for feature, scale in zip(features, self.scales):
            cls_feat, box_feat = self.cls_tower(feature), self.bbox_tower(feature)
            logits.append(self.cls_logits(cls_feat))
            distances.append(F.relu(scale(self.bbox_pred(box_feat))))
            ctrness.append(self.ctrness(box_feat))
            params.append(self.controller(box_feat))
        return logits, distances, ctrness, params


class MaskBranch(nn.Module):
    """AdelaiDet's CondInst ``MaskBranch``: P3-P5 (B, 256, H_l, W_l) -> mask features (B, 8, H_3, W_3).

    ``refine[l]`` (3x3 conv + BN + ReLU, -> ``channels``) on each input, the coarser maps upsampled to
    the first with :func:`aligned_bilinear` by their integer stride ratio and summed, then ``tower``
    (``num_convs`` x (3x3 conv + BN + ReLU), 1x1 conv -> ``out_channels``).
    """

    def __init__(self, in_channels: int = 256, channels: int = 128, out_channels: int = 8, num_convs: int = 4,
                 num_levels: int = 3) -> None:
        super().__init__()
        self.refine = nn.ModuleList(_conv_bn_relu(in_channels, channels) for _ in range(num_levels))
        self.tower = nn.Sequential(*(_conv_bn_relu(channels, channels) for _ in range(num_convs)),
                                   nn.Conv2d(channels, out_channels, 1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """AdelaiDet's ``conv_with_kaiming_uniform``: kaiming-uniform (a=1) on the 3x3 convs."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
                nn.init.kaiming_uniform_(m.weight, a=1)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        if len(features) != len(self.refine):
            raise InputError(f"MaskBranch takes {len(self.refine)} feature maps (P3-P5), got {len(features)}")
        x = self.refine[0](features[0])
        for refine, feature in zip(self.refine[1:], features[1:]):
            y = refine(feature)
            fh, fw = x.shape[-2] // y.shape[-2], x.shape[-1] // y.shape[-1]
            if fh != fw or fh * y.shape[-2] != x.shape[-2] or fw * y.shape[-1] != x.shape[-1]:
                raise InputError(f"mask branch: a {tuple(y.shape[-2:])} map does not upsample by one integer "
                                 f"factor to {tuple(x.shape[-2:])} (pad the batch to a multiple of 32)")
            x = x + aligned_bilinear(y, fh)
        return self.tower(x)


def fcos_resnet_fpn_backbone(*, depth: int = 50, stride_in_1x1: bool = True, trainable_layers: int = 3,
                             out_channels: int = 256, norm: str = "frozen_bn", width: float = 1.0) -> BackboneWithFPN:
    """zoo ResNet (``norm``: frozen BN by default) + torchvision FPN on C3-C5 with P6/P7 from P5 (AdelaiDet
    ``build_fcos_resnet_fpn_backbone``, ``TOP_LEVELS=2``): (B, 3, H, W) -> OrderedDict '0', '1', '2',
    'p6', 'p7' of (B, out_channels, H / s, W / s), s = 8 .. 128."""
    body = resnet(depth=depth, norm=norm, stride_in_1x1=stride_in_1x1, features_only=True, out_indices=(2, 3, 4),
                  width=width)
    freeze_stages(body, trainable_layers)
    in_channels = list(body.feature_channels[2:])
    return BackboneWithFPN(body, {f"layer{i}": str(i - 2) for i in (2, 3, 4)}, in_channels, out_channels,
                           extra_blocks=LastLevelP6P7(out_channels, out_channels))


class CondInst(nn.Module):
    """CondInst detector; see the module docstring for what it computes and its inputs/outputs."""

    def __init__(self, backbone: BackboneWithFPN, *, num_classes: int = 80, label_ids: Sequence[int] | None = None,
                 min_size: int = 800, max_size: int = 1333, image_mean: Sequence[float] = _STYLES["caffe"][1],
                 image_std: Sequence[float] = _STYLES["caffe"][2], head_convs: int = 4, mask_branch_channels: int = 128,
                 mask_branch_convs: int = 4, mask_channels: int = 8, mask_head_channels: int = 8,
                 mask_head_layers: int = 3, mask_out_stride: int = 4,
                 sizes_of_interest: Sequence[int] = (64, 128, 256, 512), rel_coords: bool = True,
                 score_thresh: float = 0.05, thresh_with_ctr: bool = True, pre_nms_topk: int = 1000,
                 nms_thresh: float = 0.6, detections_per_img: int = 100, center_sample: bool = True,
                 pos_radius: float = 1.5, focal_alpha: float = 0.25, focal_gamma: float = 2.0,
                 max_proposals: int = 500, topk_proposals_per_im: int = -1) -> None:
        super().__init__()
        if label_ids is None:
            label_ids = COCO_IDS if num_classes == len(COCO_IDS) else range(1, num_classes + 1)
        self.label_ids = tuple(int(i) for i in label_ids)
        if len(self.label_ids) != num_classes:
            raise ValueError(f"label_ids has {len(self.label_ids)} entries for num_classes={num_classes}")
        if max_proposals != -1 and topk_proposals_per_im != -1:
            raise ValueError("max_proposals and topk_proposals_per_im cannot both be set (AdelaiDet); set one to -1")
        self.num_classes = num_classes
        self.score_thresh, self.thresh_with_ctr = float(score_thresh), bool(thresh_with_ctr)
        self.pre_nms_topk, self.nms_thresh = int(pre_nms_topk), float(nms_thresh)
        self.detections_per_img = int(detections_per_img)
        self.sizes_of_interest = tuple(int(s) for s in sizes_of_interest)
        self.center_sample, self.pos_radius = bool(center_sample), float(pos_radius)
        self.focal_alpha, self.focal_gamma = float(focal_alpha), float(focal_gamma)
        self.max_proposals, self.topk_proposals_per_im = int(max_proposals), int(topk_proposals_per_im)
        self.fpn_strides = FPN_STRIDES
        self.mask_feat_stride = FPN_STRIDES[0]
        self.transform = GeneralizedRCNNTransform(min_size, max_size, list(image_mean), list(image_std))
        self.backbone = backbone
        self.mask_head = DynamicMaskHead(mask_channels, mask_head_channels, mask_head_layers, mask_out_stride,
                                         sizes_of_interest, rel_coords)
        self.head = FCOSHead(backbone.out_channels, num_classes, self.mask_head.num_gen_params, num_convs=head_convs,
                             num_levels=len(FPN_STRIDES))
        self.mask_branch = MaskBranch(backbone.out_channels, mask_branch_channels, mask_channels,
                                      num_convs=mask_branch_convs)

    def forward(self, images: Sequence[Tensor] | Tensor,
                targets: Sequence[dict[str, Tensor]] | None = None) -> list[dict[str, Tensor]] | dict[str, Tensor]:
        if self.training and targets is None:
            raise InputError("CondInst in training mode takes targets (one dict of 'boxes', 'labels', 'masks' per "
                             "image) and returns its losses; call model.eval() for detections")
        if not self.training and targets is not None:
            raise InputError("CondInst takes targets only in training mode (model.train())")
        if isinstance(images, Tensor):
            check_shape(images, "B,C,H,W", "images", C=3)
            images = list(images.unbind(0))
        for i, image in enumerate(images):
            check_shape(image, "C,H,W", f"images[{i}]", C=3)
        if targets is not None:
            return self._losses(list(images), self._checked_targets(images, targets))
        original_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        image_list, _ = self.transform(list(images))
        features = list(self.backbone(image_list.tensors).values())
        logits, distances, ctrness, params = self.head(features)
        mask_feats = self.mask_branch(features[:3])
        dets = [self._detect_single(i, logits, distances, ctrness, params) for i in range(len(images))]
        return self._add_masks(dets, mask_feats, image_list.tensors.shape[-2:], image_list.image_sizes,
                               original_sizes)

    def _checked_targets(self, images: Sequence[Tensor],
                         targets: Sequence[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
        """The targets with ``labels`` mapped to class indices 0..num_classes-1 and ``masks`` as uint8."""
        if len(targets) != len(images):
            raise InputError(f"got {len(targets)} targets for {len(images)} images")
        ids = torch.as_tensor(self.label_ids, dtype=torch.int64)
        out = []
        for i, (image, target) in enumerate(zip(images, targets)):
            missing = {"boxes", "labels", "masks"} - set(target)
            if missing:
                raise InputError(f"targets[{i}] lacks {sorted(missing)}")
            n = check_shape(target["boxes"], "N,xyxy", f"targets[{i}]['boxes']", xyxy=4)["N"]
            check_shape(target["labels"], "N", f"targets[{i}]['labels']", N=n)
            check_shape(target["masks"], "N,H,W", f"targets[{i}]['masks']", N=n, H=image.shape[-2], W=image.shape[-1])
            labels = target["labels"].to(torch.int64)
            match = labels.cpu()[:, None] == ids[None]
            if not bool(match.any(1).all()):
                unknown = sorted(set(labels[~match.any(1).to(labels.device)].tolist()))
                raise InputError(f"targets[{i}]['labels'] has {unknown}, not among the model's label ids "
                                 f"({self.label_ids[0]}..{self.label_ids[-1]})")
            classes = match.to(torch.int64).argmax(1).to(labels.device)
            out.append({"boxes": target["boxes"].to(image.dtype), "labels": classes,
                        "masks": target["masks"].to(torch.uint8)})
        return out

    def _losses(self, images: list[Tensor], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """The training losses of a batch (module docstring, "Training")."""
        image_list, targets = self.transform(images, targets)
        padded = image_list.tensors.shape[-2:]
        features = list(self.backbone(image_list.tensors).values())
        logits, distances, ctrness, params = self.head(features)
        mask_feats = self.mask_branch(features[:3])
        locations = [compute_locations(f.shape[-2], f.shape[-1], s, device=f.device)
                     for f, s in zip(logits, self.fpn_strides)]
        levels = torch.cat([torch.full((len(x),), i, dtype=torch.int64, device=x.device)
                            for i, x in enumerate(locations)])
        masks = [F.pad(t["masks"], (0, padded[1] - t["masks"].shape[-1], 0, padded[0] - t["masks"].shape[-2]))
                 for t in targets]
        assigned = [fcos_targets(locations, self.fpn_strides, t["boxes"], t["labels"], num_classes=self.num_classes,
                                 sizes_of_interest=self.sizes_of_interest, masks=m, center_sample=self.center_sample,
                                 radius=self.pos_radius) for t, m in zip(targets, masks)]
        offsets = torch.tensor([0] + [len(t["boxes"]) for t in targets], device=levels.device).cumsum(0)
        labels = torch.cat([a[0] for a in assigned])
        reg_targets = torch.cat([a[1] for a in assigned])
        gt_inds = torch.cat([torch.where(a[2] >= 0, a[2] + offsets[i], a[2]) for i, a in enumerate(assigned)])

        def flat(maps: list[Tensor]) -> Tensor:  # per level (B, K, H, W) -> (B * P, K), image-major as the targets
            return torch.cat([m.permute(0, 2, 3, 1).flatten(1, 2) for m in maps], 1).flatten(0, 1)

        cls_pred, reg_pred, ctr_pred = flat(logits), flat(distances), flat(ctrness)[:, 0]
        losses = fcos_losses(cls_pred, reg_pred, ctr_pred, labels, reg_targets, alpha=self.focal_alpha,
                             gamma=self.focal_gamma)
        pos = torch.nonzero(labels != self.num_classes)[:, 0]
        keep = self._sample_positives(pos, gt_inds[pos], cls_pred[pos], ctr_pred[pos], len(images), len(levels))
        pos_params = flat(params)[keep]
        if keep.numel() == 0:
            losses["loss_mask"] = mask_feats.sum() * 0 + pos_params.sum() * 0
            return losses
        p = len(levels)
        loc_all = torch.cat(locations)
        mask_logits = self.mask_head(mask_feats, self.mask_feat_stride, pos_params, keep // p, loc_all[keep % p],
                                     levels[keep % p])
        start, step = self.mask_head.mask_out_stride // 2, self.mask_head.mask_out_stride
        gt_masks = torch.cat(masks)[:, start::step, start::step][gt_inds[keep]]
        losses["loss_mask"] = dice_loss(mask_logits.sigmoid()[:, 0], gt_masks).mean()
        return losses

    def _sample_positives(self, pos: Tensor, gt_inds: Tensor, cls_pred: Tensor, ctr_pred: Tensor, num_images: int,
                          per_image: int) -> Tensor:
        """The positives (flat indices ``pos``) the mask head is trained on: AdelaiDet's ``MAX_PROPOSALS``
        random cut or ``TOPK_PROPOSALS_PER_IM`` selection (module docstring)."""
        if self.max_proposals != -1:
            if len(pos) > self.max_proposals:
                pos = pos[torch.randperm(len(pos), device=pos.device)[: self.max_proposals]]
            return pos
        if self.topk_proposals_per_im == -1:
            return pos
        with torch.no_grad():
            score = cls_pred.sigmoid().amax(1) * ctr_pred.sigmoid()
        kept = []
        for i in range(num_images):
            mine = (pos // per_image) == i
            gts = gt_inds[mine].unique()
            k = max(int(self.topk_proposals_per_im / max(len(gts), 1)), 1)
            for gt in gts:
                sel = torch.nonzero(mine & (gt_inds == gt))[:, 0]
                if len(sel) > k:
                    sel = sel[score[sel].topk(k).indices]
                kept.append(pos[sel])
        return torch.cat(kept) if kept else pos[:0]

    def _detect_single(self, i: int, logits: list[Tensor], distances: list[Tensor], ctrness: list[Tensor],
                       params: list[Tensor]) -> dict[str, Tensor]:
        """FCOS decoding of image ``i`` over all levels, then class-aware NMS and the top-k cut."""
        out: dict[str, list[Tensor]] = {k: [] for k in ("boxes", "scores", "classes", "locations", "levels", "params")}
        for level, stride in enumerate(self.fpn_strides):
            c, h, w = logits[level].shape[1:]
            cls = logits[level][i].permute(1, 2, 0).reshape(h * w, c).sigmoid()
            ctr = ctrness[level][i].reshape(h * w, 1).sigmoid()
            score = cls * ctr
            candidate = (score if self.thresh_with_ctr else cls) > self.score_thresh
            # the best pre_nms_topk candidates: a fixed-size top-k, then the non-candidates are dropped
            rank = torch.where(candidate, score, torch.full_like(score, -1.0)).flatten()
            top, idx = rank.topk(min(self.pre_nms_topk, rank.numel()))
            keep = candidate.flatten()[idx]
            top, idx = top[keep], idx[keep]
            loc_idx, cls_idx = idx // c, idx % c
            box_dtype = torch.promote_types(distances[level].dtype, torch.float32)  # boxes in >= float32
            loc = compute_locations(h, w, stride, device=cls.device, dtype=box_dtype)[loc_idx]
            dist = distances[level][i].permute(1, 2, 0).reshape(h * w, 4)[loc_idx].to(box_dtype) * stride
            out["boxes"].append(torch.cat([loc - dist[:, :2], loc + dist[:, 2:]], dim=1))
            out["scores"].append(top.sqrt())
            out["classes"].append(cls_idx)
            out["locations"].append(loc)
            out["levels"].append(torch.full_like(cls_idx, level))
            out["params"].append(params[level][i].permute(1, 2, 0).reshape(h * w, -1)[loc_idx])
        det = {k: torch.cat(v) for k, v in out.items()}
        keep = batched_nms(det["boxes"], det["scores"].to(det["boxes"].dtype), det["classes"], self.nms_thresh)
        keep = keep[: self.detections_per_img]
        return {k: v[keep] for k, v in det.items()}

    def _add_masks(self, dets: list[dict[str, Tensor]], mask_feats: Tensor, padded_size: Sequence[int],
                   image_sizes: Sequence[tuple[int, int]], original_sizes: Sequence[tuple[int, int]]) -> list[dict[str, Tensor]]:
        """Run the dynamic mask head on every detection of the batch, then map boxes and mask
        probabilities to each input image's size (AdelaiDet ``CondInst.postprocess``)."""
        im_inds = torch.cat([torch.full_like(d["classes"], i) for i, d in enumerate(dets)])
        cat = {k: torch.cat([d[k] for d in dets]) for k in ("params", "locations", "levels")}
        probs = self.mask_head(mask_feats, self.mask_feat_stride, cat["params"], im_inds, cat["locations"],
                               cat["levels"]).sigmoid()
        factor = padded_size[-2] // probs.shape[-2]
        if factor * probs.shape[-2] != padded_size[-2] or factor * probs.shape[-1] != padded_size[-1]:
            raise InputError(f"mask size {tuple(probs.shape[-2:])} does not divide the padded batch {tuple(padded_size)}")
        label_ids = torch.as_tensor(self.label_ids, dtype=torch.int64, device=mask_feats.device)
        results = []
        for det, m, (h, w), original in zip(dets, probs.split([len(d["classes"]) for d in dets]),
                                            image_sizes, original_sizes):
            m = aligned_bilinear(m, factor)[:, :, :h, :w]
            if m.shape[0] > 0:
                m = F.interpolate(m, size=original, mode="bilinear", align_corners=False)
            else:
                m = m.new_zeros(0, 1, *original)
            boxes = clip_boxes_to_image(resize_boxes(det["boxes"], (h, w), original), original)
            nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            results.append({"boxes": boxes[nonempty], "scores": det["scores"][nonempty],
                            "labels": label_ids[det["classes"][nonempty]], "masks": m[nonempty]})
        return results


@register_arch("condinst")
def condinst(*, depth: int = 50, num_classes: int = 80, style: str = "caffe",
             image_mean: Sequence[float] | None = None, image_std: Sequence[float] | None = None,
             trainable_layers: int = 3, norm: str = "frozen_bn", width: float = 1.0, fpn_channels: int = 256,
             **kwargs: Any) -> CondInst:
    """CondInst with a ResNet-``depth`` FPN (see the module docstring). ``style`` "caffe" (AdelaiDet's
    MSRA backbones) or "pytorch" (mmdet) sets the stride position and the default normalisation; ``norm``,
    ``width`` and ``fpn_channels`` shape the backbone; ``kwargs`` go to :class:`CondInst` (``label_ids``,
    ``min_size``, ``max_size``, ``score_thresh``, ``thresh_with_ctr``, ``pre_nms_topk``, ``nms_thresh``,
    ``detections_per_img``, head and mask sizes, the training options)."""
    if style not in _STYLES:
        raise ValueError(f"style must be one of {sorted(_STYLES)}, got {style!r}")
    stride_in_1x1, mean, std = _STYLES[style]
    backbone = fcos_resnet_fpn_backbone(depth=depth, stride_in_1x1=stride_in_1x1, trainable_layers=trainable_layers,
                                        out_channels=fpn_channels, norm=norm, width=width)
    return CondInst(backbone, num_classes=num_classes, image_mean=image_mean or mean, image_std=image_std or std,
                    **kwargs)
