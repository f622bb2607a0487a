"""R-FCN (ResNet-101), R-FCN with an LS-DFN branch, deformable R-FCN (R-FCN + DCN) and CoupleNet (R-FCN
coupled with a global RoI branch, with or without an LS-DFN branch).

Papers: Dai, Li, He, Sun, "R-FCN: Object Detection via Region-based Fully Convolutional Networks",
NeurIPS 2016 (https://arxiv.org/abs/1605.06409); Wu, Li, Yang, Bajaj, Ji, "Dynamic Filtering with Large
Sampling Field for ConvNets", ECCV 2018 (https://arxiv.org/abs/1803.07624); Dai et al., "Deformable
Convolutional Networks", ICCV 2017 (https://arxiv.org/abs/1703.06211). Configuration of the
reference COCO models: msracver/Deformable-ConvNets ``rfcn/symbols/resnet_v1_101_rfcn.py`` with
``experiments/rfcn/cfgs/resnet_v1_101_coco_trainval_rfcn_end2end_ohem.yaml`` (MXNet) and
YuwenXiong/py-R-FCN ``models/coco/ResNet-101/rfcn_end2end/test_agnostic.prototxt`` (Caffe); both agree.
Deformable R-FCN: ``rfcn/symbols/resnet_v1_101_rfcn_dcn.py`` with
``resnet_v1_101_coco_trainval_rfcn_dcn_end2end_ohem.yaml``, which differs from the R-FCN config only in
its names (msracver/Deformable-ConvNets@6aeda878a95bcb55eadffbe125804e730574de8d).

What it computes
----------------
``model(images)`` with a list of 3 x H_i x W_i RGB float images in [0, 1]:

1. torchvision's ``GeneralizedRCNNTransform``: shorter side 600, longer side at most 1000 (the reference
   ``SCALES: [600, 1000]``), normalisation ``255 * x - mean`` with the reference's RGB pixel means
   (123.15, 115.90, 103.06) and no std (``image_std = 1/255``), no padding beyond the largest image
   (``IMAGE_STRIDE: 0`` -> ``size_divisible=1``).
2. Backbone (``backbone.body``, torchvision key layout): MSRA ResNet-101 as the reference — stride on the
   first 1x1 of a bottleneck, stem max-pool 3x3/2 without padding in ceil mode (Caffe/MXNet ``pool1``),
   every BatchNorm frozen (``FrozenBatchNorm2d``, eps 1e-5), stem and res2 (layer1) not trained
   (``FIXED_PARAMS``); res5 (layer4) "a trous": stride 1 and dilation 2 in all three blocks, so
   res4 (C4, 1024 channels) and res5 (C5, 2048 channels) are both at stride 16.
3. RPN on C4 (``rpn``, torchvision ``RegionProposalNetwork``): ``rpn.head.conv`` 3x3 1024 -> 512 + ReLU,
   ``cls_logits`` 1x1 -> 2A (A bg scores, then A fg scores: Caffe/MXNet's ``Reshape(0, 2, -1, 0)``
   layout), ``bbox_pred`` 1x1 -> 4A; the objectness logit given to torchvision is fg - bg, so
   ``sigmoid(fg - bg)`` is the reference's 2-way softmax and torchvision's binary cross-entropy is
   its 2-way softmax loss. A = 12 anchors per position: ratios (h/w) 0.5, 1, 2 x sizes 64, 128, 256,
   512 (``ANCHOR_SCALES: [4, 8, 16, 32]`` x stride 16), ratio-major as py-faster-rcnn's
   ``generate_anchors``. Pre-/post-NMS top-n 6000 / 300 (train and test), NMS 0.7.
4. R-FCN head on C5 (``roi_heads``): ``conv_new_1`` 1x1 2048 -> 1024 + ReLU; ``rfcn_cls`` 1x1 1024 ->
   k*k*(C+1) and ``rfcn_bbox`` 1x1 1024 -> k*k*4*2 (class-agnostic: bg and fg deltas, the reference
   ``CLASS_AGNOSTIC: true``) with k = 7; position-sensitive RoI pooling (``torchvision.ops.ps_roi_pool``,
   spatial scale 1/16, 7 x 7 bins, bin (i, j) of output channel c reads input channel (c*k + i)*k + j)
   followed by average voting (mean over the 49 bins) -> (K, C+1) class scores and (K, 8) deltas.
   Eval: softmax, fg deltas decoded with stds (0.1, 0.1, 0.2, 0.2) (torchvision box coder weights
   10/10/5/5), boxes clipped, score > 0.001, per-class NMS 0.3, 100 detections per image (the
   reference tester).
5. Output (eval): one dict per image, ``boxes`` (K, 4) x1y1x2y2 in input pixels, ``scores`` (K,),
   ``labels`` (K,) int64. With ``num_classes=81`` (COCO, background 0 + 80 contiguous classes as the
   reference) labels are COCO category ids 1..90 (``zoo.data.coco.COCO_IDS``), as every
   zoo detector; with any other ``num_classes`` they are the contiguous class indices 1..C.
   Training (``model(images, targets)``, target labels in the same convention) returns torchvision's
   loss dict ``loss_objectness``, ``loss_rpn_box_reg``, ``loss_classifier``, ``loss_box_reg``.

LS-DFN (``lsdfn={...}``)
------------------------
The LS-DFN paper inserts the layer "right between the feature extractor and the detection head,
producing C' dynamic features ... concatenated with original features before fed into detection head",
with C' = 24 (seed 000). Here :class:`zoo.layers.LSDFNBranch` (1x1 conv 2048 -> 256 + ReLU, then
:class:`zoo.ops.lsdfn.LSDFN` 256 -> C') reads res5c (C5) and its output is concatenated after C5's 2048
channels, so ``conv_new_1`` takes 2048 + C' channels. Choices the paper leaves open, taken from its
DeepLab setting: k = 3, s = 5, gamma = 3 and the 256-channel reduction (an LS-DFN reading 2048 channels
directly would need a C' x 2048 kernel per position: a 2048 -> 49,152-channel kernel branch). The RPN
is unchanged (the paper uses fixed, separately trained RPN proposals, so the branch only feeds the
R-FCN head).

Deformable R-FCN (``dcn=True``, ``deform_psroi=True``)
-----------------------------------------------------
As ``resnet_v1_101_rfcn_dcn.py``:

- ``dcn``: the 3x3 conv (``conv2``, MXNet ``res5{a,b,c}_branch2b``) of the three res5 (layer4) blocks is
  a deformable convolution v1 (:class:`zoo.ops.deform_conv.DeformConv2d`: stride 1, dilation 2,
  padding 2, ``deform_groups`` = 4 offset fields (``num_deformable_group=4``), no bias) whose offsets
  come from ``conv2.conv_offset`` (MXNet ``res5?_branch2b_offset``: 3x3, dilation 2, padding 2,
  512 -> 72 = 4 x 2 x 9 channels, with bias; zero-initialised as the reference's ``init_weight_rfcn``).
- ``deform_psroi``: both PS poolings are :class:`zoo.ops.deform_roi_pool.DeformPSRoIPool` (the
  authors' ``DeformablePSROIPooling``: 7 x 7 bins, group and part size 7, ``sample_per_part`` 4,
  ``trans_std`` 0.1, spatial scale 1/16), followed by the same average voting. Offsets:
  ``roi_heads.rfcn_cls_pool.conv_offset`` (MXNet ``rfcn_cls_offset_t``: 1x1 1024 -> 2 x 49 x (C+1),
  one (dx, dy) field per class) and ``roi_heads.rfcn_bbox_pool.conv_offset`` (``rfcn_bbox_offset_t``:
  1x1 1024 -> 2 x 49, one field shared by the 8 box outputs), each PS-pooled without offsets
  (``no_trans``) to 7 x 7 (x, y) offsets per RoI; zero-initialised as the reference.
  Proposals (torchvision boxes, (x2, y2) exclusive) are handed to the kernel's inclusive convention as
  (x1, y1, x2 - 1, y2 - 1), so the box [x1, x2) pools [round(x1) / 16 - 0.5, round(x2) / 16 - 0.5)
  on the map (likewise y).
- The RPN, ``conv_new_1``, ``rfcn_cls``, ``rfcn_bbox``, the losses and the test settings are those of
  plain R-FCN.

CoupleNet (``couplenet``)
------------------------
Zhu, Zhao, Wang, Zhao, Wu, Lu, "CoupleNet: Coupling Global Structure with Local Parts for Object
Detection", ICCV 2017 (https://arxiv.org/abs/1708.02863); the LS-DFN paper uses it as its second host. The
layout is the authors' released model, ``test_agnostic.prototxt`` / ``train_agnostic_ohem.prototxt`` of
tshizys/CoupleNet@3187614dc35c4f52e560c6ad9f2550d37bae7b81 (Caffe, built on py-R-FCN), trained on VOC 07+12:

- Input, backbone, RPN (on res4b22, C4), ``conv_new_1`` (1x1 2048 -> 1024 + ReLU on res5c), sampling, OHEM
  (128 RoIs per image) and the class-agnostic 8 deltas are R-FCN's. The VOC model has 21 classes and 9
  anchors (``rpn_cls_score`` 18 = 9 bg then 9 fg, ``rpn_bbox_pred`` 36: py-R-FCN's default scales 8, 16, 32
  at stride 16, sizes 128, 256, 512, ratios 0.5, 1, 2) and py-R-FCN's pixel means (BGR 102.9801, 115.9465,
  122.7717; here RGB, the converter flips ``conv1``).
- Local branch: R-FCN's head, the authors' ``local_cls`` (1x1 1024 -> 7*7*21) and ``local_bbox`` (1x1 1024
  -> 7*7*8) here ``rfcn_cls`` / ``rfcn_bbox``, PS RoI pooling 7x7 and average voting -> ``local_cls_score``
  (K, 21) and ``local_bbox_pred`` (K, 8).
- Global branch: ``roi_pool5``, RoI (max) pooling of ``conv_new_1``'s output to 7 x 7 (spatial scale
  1/16, ``torchvision.ops.roi_pool``, a port of the same Caffe kernel; proposals given inclusive, (x2 - 1,
  y2 - 1), as py-faster-rcnn's boxes); ``conv_pool5`` 7x7 1024 -> 1024 (no padding: one value per RoI,
  a fully connected layer) + ReLU; ``conv_pool5_1`` 1x1 1024 -> 1024 + ReLU; ``global_cls_score`` 1x1 ->
  21 and ``global_bbox_pred`` 1x1 -> 8.
- Coupling (the ``Eltwise`` layers, default operation SUM): class scores = ``global_cls_score`` +
  ``conv/local_cls_score`` (here ``local_cls_conv``: a 1x1 21 -> 21 convolution on the voted local scores,
  the paper's 1x1 normalisation; the global scores get none), softmax; box deltas = ``global_bbox_pred`` +
  the voted local deltas (no normalisation). All new layers Gaussian std 0.01, zero bias.
- What the released prototxts do not contain: the paper's enlarged-context RoI in the global branch. The
  authors' README lists the released VOC model (81.7% mAP) as "without adding context"; the context
  variant (82.1%) was never published as code or weights, so it is not built here.
- ``lsdfn`` adds the LS-DFN branch before ``conv_new_1`` exactly as for R-FCN (C5 + C' channels), so it feeds
  both the local and the global branch.

Interpretation choices and differences from the reference
---------------------------------------------------------
- Deformable convolution samples as torchvision's / mmcv's kernel (zoo's ``deform_conv2d``): bilinear with
  zero padding, so a tap within one pixel outside the map blends with zeros. The authors' MXNet kernel
  (``rfcn/operator_cxx/nn/deformable_im2col.cuh``) reads a tap only at 0 <= y < H, 0 <= x < W (0
  outside) and replicates the last row / column for y in (H - 1, H). Taps at whole-pixel positions,
  hence every tap while the offsets are zero, agree; learned offsets that land within one pixel of the
  border do not.
- Plain R-FCN's PS RoI pooling is torchvision's, which quantises the RoI to the feature grid
  (``round(x * 1/16)``) before splitting it into bins and never reads the last row/column of the map;
  the reference splits ``[round(x1), round(x2) + 1) / 16`` in floats and clips at the map size. Both
  average the cells of each bin (empty bins give 0) and vote by the mean of the 49 bins.
- Boxes use torchvision's conventions (width x2 - x1, anchors centred on multiples of 16 and rounded
  to whole pixels, RPN min-size 1e-3) instead of py-faster-rcnn's (+1 widths, anchors centred at 7.5).
- Training is torchvision's (matcher thresholds 0.7/0.3 for the RPN, 0.5/0.5 for the head as the
  reference; smooth-L1 with beta 1/9 for both). Online hard example mining as the reference: every
  proposal (``box_batch_size_per_image=300``, at most 25% foreground) is scored, and the
  ``ohem_rois`` (128) RoIs per image with the largest classification + box loss carry the head loss
  (``ohem_rois=None`` uses all sampled RoIs). The reference's per-layer learning-rate multipliers
  (``conv_new_1`` x3) are an optimiser setting, not part of the model.
- ``class_agnostic=False`` gives class-specific ``rfcn_bbox`` (k*k*4*(C+1) channels) (CoupleNet: and
  ``global_bbox_pred``).
- CoupleNet's reference (py-R-FCN) tester keeps every score above -inf and 400 detections per image before
  the VOC evaluation; here, as for R-FCN, score > 0.001 and 100 detections. py-faster-rcnn's proposal layer
  drops boxes under 16 pixels (``RPN_MIN_SIZE``) at the image scale; torchvision's RPN drops only those
  under 1e-3.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import ps_roi_pool, roi_pool

from zoo.archs import register_arch
from zoo.data.coco import COCO_IDS
from zoo.errors import InputError
from zoo.layers import DeviceAnchorGenerator, LSDFNBranch, dcn_conv2_factory, resnet
from zoo.ops.deform_roi_pool import DeformPSRoIPool

__all__ = ["CoupleNetRoIHeads", "RFCN", "RFCNBackbone", "RFCNRPNHead", "RFCNRoIHeads", "couplenet", "inclusive_roi_rows",
           "ps_roi_vote", "rfcn"]

#: the reference's RGB pixel means on the 0..255 scale (``PIXEL_MEANS`` is stored BGR: 103.06, 115.90, 123.15)
PIXEL_MEANS_RGB = (123.15, 115.90, 103.06)
COCO_NUM_CLASSES = len(COCO_IDS) + 1  # 81: background + 80 contiguous classes
VOC_NUM_CLASSES = 21  # background + the 20 PASCAL VOC classes
#: py-R-FCN's (py-faster-rcnn's) ``PIXEL_MEANS`` (stored BGR: 102.9801, 115.9465, 122.7717) as RGB
CAFFE_PIXEL_MEANS_RGB = (122.7717, 115.9465, 102.9801)


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
    with torchvision's RoI sampling, losses and post-processing (see the module docstring).

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


class CoupleNetRoIHeads(RFCNRoIHeads):
    """CoupleNet head: the R-FCN head (the local branch, ``rfcn_cls`` / ``rfcn_bbox``) coupled with a global
    RoI branch (see "CoupleNet" in the module docstring). Arguments as :class:`RFCNRoIHeads` plus
    ``global_channels`` (the width of ``conv_pool5`` and ``conv_pool5_1``)."""

    def __init__(self, in_channels: int = 2048, num_classes: int = VOC_NUM_CLASSES, *, global_channels: int = 1024,
                 **kwargs: Any) -> None:
        super().__init__(in_channels, num_classes, **kwargs)
        mid, k = self.conv_new_1.out_channels, self.group_size
        self.conv_pool5 = nn.Conv2d(mid, global_channels, k)
        self.conv_pool5_1 = nn.Conv2d(global_channels, global_channels, 1)
        self.global_cls_score = nn.Conv2d(global_channels, num_classes, 1)
        self.global_bbox_pred = nn.Conv2d(global_channels, self.rfcn_bbox.out_channels // (k * k), 1)
        self.local_cls_conv = nn.Conv2d(num_classes, num_classes, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Gaussian std 0.01, zero bias for every new conv (the authors' fillers)."""
        super().reset_parameters()
        for name in ("conv_pool5", "conv_pool5_1", "global_cls_score", "global_bbox_pred", "local_cls_conv"):
            m = getattr(self, name, None)  # absent while RFCNRoIHeads.__init__ runs
            if m is not None:
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def roi_scores(self, x: Tensor, proposals: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Local (R-FCN) + global scores: ``global_cls_score + local_cls_conv(local scores)`` (K, C+1) and
        ``global_bbox_pred + local deltas``."""
        local_cls, local_box = super().roi_scores(x, proposals)
        rows = inclusive_roi_rows(proposals).to(x.dtype)
        g = roi_pool(x, rows, (self.group_size, self.group_size), self.spatial_scale)
        g = F.relu(self.conv_pool5_1(F.relu(self.conv_pool5(g))))
        cls = self.global_cls_score(g).flatten(1) + self.local_cls_conv(local_cls[:, :, None, None]).flatten(1)
        return cls, self.global_bbox_pred(g).flatten(1) + local_box


class RFCN(GeneralizedRCNN):
    """R-FCN: torchvision's ``GeneralizedRCNN`` with :class:`RFCNBackbone`, an RPN on C4 and
    :class:`RFCNRoIHeads` (see the module docstring for inputs and outputs)."""

    def inserted_input_channels(self) -> dict[str, tuple[int, int, int]]:
        """Where the LS-DFN output enters plain R-FCN: ``{parameter: (dim, start, count)}``. Its C'
        channels follow C5's in ``conv_new_1``; zero there, R-FCN + LS-DFN computes what R-FCN does
        (see :func:`zoo.weights.expand_state_dict`)."""
        heads = self.roi_heads
        if heads.lsdfn is None:
            return {}
        count = heads.lsdfn.out_channels
        return {"roi_heads.conv_new_1.weight": (1, heads.conv_new_1.in_channels - count, count)}


def _detector(heads_type: type[RFCNRoIHeads], heads_args: Mapping[str, Any], *, depth: int, num_classes: int,
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


@register_arch("rfcn")
def rfcn(*, depth: int = 101, num_classes: int = COCO_NUM_CLASSES, lsdfn: Mapping[str, Any] | None = None,
         dcn: bool = False, deform_groups: int = 4, deform_psroi: bool = False,
         class_agnostic: bool = True, trainable_layers: int = 3, min_size: int = 600, max_size: int = 1000,
         image_mean: Sequence[float] | None = None, image_std: Sequence[float] | None = None,
         size_divisible: int = 1, anchor_sizes: Sequence[int] = (64, 128, 256, 512),
         aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0), rpn_pre_nms_top_n_train: int = 6000,
         rpn_pre_nms_top_n_test: int = 6000, rpn_post_nms_top_n_train: int = 300,
         rpn_post_nms_top_n_test: int = 300, rpn_nms_thresh: float = 0.7, rpn_batch_size_per_image: int = 256,
         box_batch_size_per_image: int = 300, ohem_rois: int | None = 128, box_score_thresh: float = 1e-3,
         box_nms_thresh: float = 0.3, box_detections_per_img: int = 100) -> RFCN:
    """R-FCN (ResNet ``depth``, res5 dilated, 7x7 PS RoI pooling) with random init; ``lsdfn``: keyword
    arguments of :class:`zoo.layers.LSDFNBranch` (``out_channels`` C', ``reduce_channels``,
    ``kernel_size``, ``samples_per_side``, ``sample_stride``, LS-DFN options) adding the LS-DFN branch
    on res5; ``dcn``: deformable res5 3x3 convs (``deform_groups`` offset fields) and ``deform_psroi``:
    deformable PS RoI pooling, together deformable R-FCN. ``num_classes`` counts the background (COCO
    81). ``image_mean`` / ``image_std`` are on torchvision's [0, 1] scale (default: the reference's
    ``255 * x - PIXEL_MEANS``). Remaining arguments as torchvision's ``FasterRCNN``; ``ohem_rois`` RoIs
    per image carry the head loss (None: no OHEM)."""
    heads = {"class_agnostic": class_agnostic, "lsdfn": lsdfn, "deform_psroi": deform_psroi, "ohem_rois": ohem_rois}
    return _detector(RFCNRoIHeads, heads, **_common(locals()))


@register_arch("couplenet")
def couplenet(*, depth: int = 101, num_classes: int = VOC_NUM_CLASSES, lsdfn: Mapping[str, Any] | None = None,
              global_channels: int = 1024, class_agnostic: bool = True, trainable_layers: int = 3,
              min_size: int = 600, max_size: int = 1000, image_mean: Sequence[float] | None = None,
              image_std: Sequence[float] | None = None, size_divisible: int = 1,
              anchor_sizes: Sequence[int] = (128, 256, 512), aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
              rpn_pre_nms_top_n_train: int = 6000, rpn_pre_nms_top_n_test: int = 6000,
              rpn_post_nms_top_n_train: int = 300, rpn_post_nms_top_n_test: int = 300, rpn_nms_thresh: float = 0.7,
              rpn_batch_size_per_image: int = 256, box_batch_size_per_image: int = 300, ohem_rois: int | None = 128,
              box_score_thresh: float = 1e-3, box_nms_thresh: float = 0.3, box_detections_per_img: int = 100) -> RFCN:
    """CoupleNet (the authors' released VOC layout: R-FCN local branch + global RoI branch, see the module
    docstring) with random init. Defaults are the VOC model's: 21 classes, 9 anchors (sizes 128, 256, 512),
    py-R-FCN's pixel means (``image_mean`` None). ``lsdfn`` adds the LS-DFN branch on res5 as :func:`rfcn`;
    ``global_channels``: width of ``conv_pool5`` / ``conv_pool5_1``. Other arguments as :func:`rfcn`."""
    heads = {"class_agnostic": class_agnostic, "lsdfn": lsdfn, "ohem_rois": ohem_rois,
             "global_channels": global_channels}
    return _detector(CoupleNetRoIHeads, heads, dcn=False, deform_groups=4, default_mean=CAFFE_PIXEL_MEANS_RGB,
                     **_common(locals()))


def _common(args: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor arguments :func:`_detector` takes directly: a constructor's ``locals()`` without the
    head's arguments (and the ``heads`` dict built from them)."""
    skip = {"heads", "lsdfn", "deform_psroi", "class_agnostic", "ohem_rois", "global_channels"}
    return {k: v for k, v in args.items() if k not in skip}
