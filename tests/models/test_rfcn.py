"""R-FCN, R-FCN + LS-DFN and deformable R-FCN (zoo.models.rfcn). Real forwards run at 160 x 192 with few
proposals; the heavy checks build on the meta device. The parts alone: tests/layers/test_rfcn.py."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from zoo.data.coco import COCO_IDS
from zoo.errors import InputError
from zoo.layers import LSDFNBranch
from zoo.layers.rfcn import RFCNRoIHeads
from zoo.models.resnet import resnet
from zoo.models.rfcn import rfcn
from zoo.ops.deform_conv import DeformConv2d
from zoo.ops.deform_ps_roi_pool import DeformPSRoIPool
from zoo.ops.lsdfn import LSDFN

LSDFN_ARGS = {"out_channels": 24, "reduce_channels": 256, "kernel_size": 3, "samples_per_side": 5, "sample_stride": 3}
ENTRIES = {"rfcn-r101": {}, "rfcn-lsdfn-r101": {"lsdfn": LSDFN_ARGS},  # the registry entries' arguments
           "rfcn-dcn-r101": {"dcn": True, "deform_psroi": True}}
SMALL = {"min_size": 160, "max_size": 192, "rpn_pre_nms_top_n_test": 200, "rpn_post_nms_top_n_test": 50,
         "rpn_pre_nms_top_n_train": 200, "rpn_post_nms_top_n_train": 50, "box_batch_size_per_image": 64,
         "rpn_batch_size_per_image": 64, "ohem_rois": 16}


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tame(model: nn.Module) -> nn.Module:
    """Random ResNet-101 activations with frozen (identity) BN explode; zero the RPN deltas and the R-FCN
    maps so that proposals are the clipped anchors and the detections are predictable."""
    with torch.no_grad():
        for conv in (model.rpn.head.bbox_pred, model.roi_heads.rfcn_cls, model.roi_heads.rfcn_bbox):
            conv.weight.zero_()
            conv.bias.zero_()
    return model


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: tame(rfcn(**args, **SMALL)) for name, args in ENTRIES.items()}


# ------------------------------------------------------------------------------------------- 1. build
@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_builds_on_meta_with_expected_parameters(name):
    args = ENTRIES[name]
    with torch.device("meta"):
        model = rfcn(**args)
        body = resnet(depth=101, features_only=True, norm="frozen_bn", out_indices=(3, 4))
        branch = LSDFNBranch(2048, **LSDFN_ARGS) if args.get("lsdfn") else None
    assert all(p.is_meta for p in model.parameters())
    c_in = 2048 + (24 if branch is not None else 0)
    a = 12  # 3 ratios x 4 sizes
    rpn = (1024 * 9 * 512 + 512) + (512 * 2 * a + 2 * a) + (512 * 4 * a + 4 * a)
    head = (c_in * 1024 + 1024) + (1024 * 49 * 81 + 49 * 81) + (1024 * 49 * 8 + 49 * 8)
    extra = n_params(branch) if branch is not None else 0
    if args.get("dcn"):  # res5{a,b,c}_branch2b_offset: 3x3 512 -> 72, with bias
        extra += 3 * (72 * 512 * 9 + 72)
    if args.get("deform_psroi"):  # rfcn_cls_offset_t 1x1 1024 -> 2*49*81, rfcn_bbox_offset_t 1x1 1024 -> 2*49
        extra += (1024 * 98 * 81 + 98 * 81) + (1024 * 98 + 98)
    assert n_params(model) == n_params(body) + rpn + head + extra
    assert model.roi_heads.conv_new_1.in_channels == c_in
    assert (model.roi_heads.lsdfn is not None) == (branch is not None)


def test_lsdfn_branch_feeds_conv_new_1():
    with torch.device("meta"):
        plain, dyn = rfcn(), rfcn(lsdfn=LSDFN_ARGS)
    assert plain.roi_heads.conv_new_1.in_channels == 2048 and plain.roi_heads.lsdfn is None
    branch = dyn.roi_heads.lsdfn
    assert isinstance(branch, LSDFNBranch) and isinstance(branch.lsdfn, LSDFN)
    assert dyn.roi_heads.conv_new_1.in_channels == 2048 + 24
    assert branch.reduce.in_channels == 2048 and branch.lsdfn.in_channels == 256
    assert (branch.lsdfn.out_channels, branch.lsdfn.kernel_size, branch.lsdfn.samples_per_side,
            branch.lsdfn.sample_stride) == (24, 3, 5, 3)
    assert "roi_heads.lsdfn.lsdfn.kernel_u.weight" in dyn.state_dict()


def test_backbone_is_the_reference_resnet():
    with torch.device("meta"):
        model = rfcn()
    body = model.backbone.body
    assert all(b.conv2.dilation == (2, 2) and b.conv2.stride == (1, 1) for b in body.layer4)  # res5 a trous
    assert body.layer4[0].downsample[0].stride == (1, 1)
    assert body.layer2[0].conv1.stride == (2, 2) and body.layer2[0].conv2.stride == (1, 1)  # MSRA: stride in 1x1
    assert body.layer3[0].conv1.stride == (2, 2)
    assert (body.maxpool.padding, body.maxpool.ceil_mode) == (0, True)  # Caffe pool1
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert isinstance(body.bn1, FrozenBatchNorm2d)
    trainable = {n.split(".")[2] for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone")}
    assert trainable == {"layer2", "layer3", "layer4"}
    assert model.backbone(torch.empty(1, 3, 600, 1000, device="meta"))["res5"].shape == (1, 2048, 38, 63)
    assert model.transform.min_size == (600,) and model.transform.max_size == 1000
    anchors = model.rpn.anchor_generator
    assert anchors.sizes == ((64, 128, 256, 512),) and anchors.aspect_ratios == ((0.5, 1.0, 2.0),)
    # ratio-major like py-faster-rcnn's generate_anchors: anchor a = ratio * 4 + size, ratio = h / w
    cell = anchors.generate_anchors([64, 128, 256, 512], [0.5, 1.0, 2.0])
    w, h = cell[:, 2] - cell[:, 0], cell[:, 3] - cell[:, 1]
    assert (w[:4] > h[:4]).all() and (w[4:8] == h[4:8]).all() and (w[8:] < h[8:]).all()
    assert (w[1:4] > w[:3]).all()


def test_deformable_rfcn_is_the_reference_dcn_layout():
    with torch.device("meta"):
        model = rfcn(dcn=True, deform_psroi=True)
    body, heads = model.backbone.body, model.roi_heads
    for block in body.layer4:  # res5{a,b,c}_branch2b: DeformableConvolution, dilation 2, 4 deformable groups
        conv = block.conv2
        assert isinstance(conv, DeformConv2d) and conv.bias is None
        assert (conv.dilation, conv.padding, conv.stride, conv.deform_groups) == ((2, 2), (2, 2), (1, 1), 4)
        offset = conv.conv_offset  # res5?_branch2b_offset: 72 filters, 3x3, pad 2, dilate 2, with bias
        assert (offset.out_channels, offset.kernel_size, offset.padding, offset.dilation) == (
            72, (3, 3), (2, 2), (2, 2))
        assert offset.bias is not None
    assert not any(isinstance(m, DeformConv2d) for layer in (body.layer1, body.layer2, body.layer3)
                   for m in layer.modules())
    cls, box = heads.rfcn_cls_pool, heads.rfcn_bbox_pool
    assert isinstance(cls, DeformPSRoIPool) and isinstance(box, DeformPSRoIPool)
    for pool, outputs, classes in ((cls, 81, 81), (box, 8, 1)):  # per-class cls offsets, one bbox offset field
        assert (pool.output_dim, pool.offset_classes, pool.group_size, pool.pooled_size, pool.part_size) == (
            outputs, classes, 7, 7, 7)
        assert (pool.sample_per_part, pool.trans_std, pool.spatial_scale) == (4, 0.1, 1 / 16)
        assert pool.conv_offset.in_channels == 1024 and pool.conv_offset.out_channels == 2 * 49 * classes
    with torch.device("meta"):
        plain = rfcn()
    assert plain.roi_heads.rfcn_cls_pool is None and isinstance(plain.backbone.body.layer4[0].conv2, nn.Conv2d)
    # the reference zero-initialises every offset conv
    fresh = RFCNRoIHeads(32, 4, group_size=3, mid_channels=16, deform_psroi=True)
    assert all(torch.count_nonzero(p) == 0 for n, p in fresh.named_parameters() if "conv_offset" in n)


# ------------------------------------------------------------------------------------------- 2. parts
# ------------------------------------------------------------------------------------------- 2. forward
@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_eval_forward_structure_and_coco_labels(models, name):
    model = models[name].eval()
    images = [torch.rand(3, 160, 192)]
    with torch.no_grad():
        out = model(images)
    assert isinstance(out, list) and len(out) == 1 and set(out[0]) == {"boxes", "scores", "labels"}
    det = out[0]
    k = det["boxes"].shape[0]
    assert 0 < k <= 100 and det["boxes"].shape == (k, 4) and det["scores"].shape == det["labels"].shape == (k,)
    assert det["labels"].dtype == torch.int64 and set(det["labels"].tolist()) <= set(COCO_IDS)
    # zeroed score maps: every class has probability 1/81 (> the 0.001 threshold)
    torch.testing.assert_close(det["scores"], torch.full((k,), 1 / 81))
    boxes = det["boxes"]
    assert (boxes[:, 2:] > boxes[:, :2]).all() and boxes.min() >= 0
    assert (boxes[:, 2] <= 192).all() and (boxes[:, 3] <= 160).all()

    # a bias on the score maps of contiguous class 12 makes every detection COCO id 13 (stop sign)
    with torch.no_grad():
        model.roi_heads.rfcn_cls.bias[12 * 49:13 * 49] = 10.0
        out = model(images)
        model.roi_heads.rfcn_cls.bias.zero_()
    assert out[0]["labels"].numel() > 0 and set(out[0]["labels"].tolist()) == {COCO_IDS[11]} == {13}


def test_other_num_classes_give_contiguous_labels():
    torch.manual_seed(0)
    model = tame(rfcn(num_classes=5, **SMALL)).eval()
    assert model.roi_heads.rfcn_cls.out_channels == 49 * 5
    with torch.no_grad():
        model.roi_heads.rfcn_cls.bias[3 * 49:4 * 49] = 10.0
        out = model([torch.rand(3, 160, 192)])
    assert out[0]["labels"].numel() > 0 and set(out[0]["labels"].tolist()) == {3}


def training_step(model: nn.Module, labels: list[int]) -> None:
    """One train-mode forward on a 160 x 192 image with two boxes labelled ``labels``: the four R-CNN losses,
    all finite, and their sum's backward (gradients left on the model)."""
    model.train().zero_grad()
    targets = [{"boxes": torch.tensor([[10.0, 20, 100, 120], [60, 30, 180, 150]]), "labels": torch.tensor(labels)}]
    losses = model([torch.rand(3, 160, 192)], targets)
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_training_returns_losses_and_gradients(models, name):
    model = models[name]
    training_step(model, [1, 90])
    heads = model.roi_heads
    assert heads.conv_new_1.weight.grad is not None and heads.rfcn_cls.weight.grad.abs().sum() > 0
    assert model.rpn.head.cls_logits.weight.grad is not None
    assert model.backbone.body.layer1[0].conv1.weight.grad is None  # frozen res2 / stem
    assert model.backbone.body.layer2[0].conv1.weight.grad is not None
    if heads.lsdfn is not None:
        assert heads.lsdfn.lsdfn.kernel_u.weight.grad is not None
    if heads.rfcn_cls_pool is not None:  # offsets reach every offset conv
        assert heads.rfcn_cls_pool.conv_offset.weight.grad is not None
        assert heads.rfcn_bbox_pool.conv_offset.weight.grad is not None
        assert model.backbone.body.layer4[2].conv2.conv_offset.weight.grad is not None
    model.eval()


def test_training_rejects_unused_coco_ids(models):
    model = models["rfcn-r101"].train()
    bad = [{"boxes": torch.tensor([[10.0, 20, 100, 120]]), "labels": torch.tensor([12])}]  # id 12 is not in COCO 2017
    with pytest.raises(InputError, match="COCO category ids"):
        model([torch.rand(3, 160, 192)], bad)
    with pytest.raises(InputError, match="targets"):
        model.roi_heads({"res5": torch.zeros(1, 2048, 10, 12)}, [torch.zeros(0, 4)], [(160, 192)], None)
    model.eval()
