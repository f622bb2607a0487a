"""R-FCN (ResNet-101), R-FCN with an LS-DFN branch and deformable R-FCN (R-FCN + DCN). CoupleNet, which
builds on R-FCN's parts (:mod:`zoo.layers.rfcn`), is :mod:`zoo.models.couplenet`.

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
- ``deform_psroi``: both PS poolings are :class:`zoo.ops.deform_ps_roi_pool.DeformPSRoIPool` (the
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
- ``class_agnostic=False`` gives class-specific ``rfcn_bbox`` (k*k*4*(C+1) channels).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from zoo.archs import register_arch
from zoo.layers.rfcn import COCO_NUM_CLASSES, RFCN, RFCNRoIHeads, rfcn_detector, rfcn_detector_args

__all__ = ["rfcn"]


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
    return rfcn_detector(RFCNRoIHeads, heads, **rfcn_detector_args(locals()))

