"""CoupleNet (R-FCN coupled with a global RoI branch), with or without an LS-DFN branch.

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
- Those of R-FCN (:mod:`zoo.models.rfcn`); ``class_agnostic=False`` gives class-specific ``rfcn_bbox`` and
  ``global_bbox_pred``.
- CoupleNet's reference (py-R-FCN) tester keeps every score above -inf and 400 detections per image before
  the VOC evaluation; here, as for R-FCN, score > 0.001 and 100 detections. py-faster-rcnn's proposal layer
  drops boxes under 16 pixels (``RPN_MIN_SIZE``) at the image scale; torchvision's RPN drops only those
  under 1e-3.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_pool

from zoo.archs import register_arch
from zoo.layers.rfcn import RFCN, RFCNRoIHeads, inclusive_roi_rows, rfcn_detector, rfcn_detector_args

__all__ = ["CoupleNetRoIHeads", "couplenet"]

VOC_NUM_CLASSES = 21  # background + the 20 PASCAL VOC classes
#: py-R-FCN's (py-faster-rcnn's) ``PIXEL_MEANS`` (stored BGR: 102.9801, 115.9465, 122.7717) as RGB
CAFFE_PIXEL_MEANS_RGB = (122.7717, 115.9465, 102.9801)


class CoupleNetRoIHeads(RFCNRoIHeads):
    """CoupleNet head: the R-FCN head (the local branch, ``rfcn_cls`` / ``rfcn_bbox``) coupled with a global
    RoI branch (see the module docstring). Arguments as :class:`RFCNRoIHeads` plus
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
    py-R-FCN's pixel means (``image_mean`` None). ``lsdfn`` adds the LS-DFN branch on res5 as
    :func:`zoo.models.rfcn.rfcn`; ``global_channels``: width of ``conv_pool5`` / ``conv_pool5_1``. Other
    arguments as :func:`zoo.models.rfcn.rfcn`."""
    heads = {"class_agnostic": class_agnostic, "lsdfn": lsdfn, "ohem_rois": ohem_rois,
             "global_channels": global_channels}
    return rfcn_detector(CoupleNetRoIHeads, heads, dcn=False, deform_groups=4, default_mean=CAFFE_PIXEL_MEANS_RGB,
                         **rfcn_detector_args(locals()))
