"""Faster / Mask R-CNN with deformable convs and deformable RoI pooling (zoo.models.rcnn) and the
"detection" presets (zoo.tasks.object_detection). Small images (min_size 128) and few proposals keep this fast."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import MultiScaleRoIAlign, roi_align

from zoo.errors import InputError
from zoo.models.rcnn import MultiScaleDeformRoIPool, faster_rcnn, mask_rcnn
from zoo.ops.deform_conv import DeformConv2d, ModulatedDeformConv2d
from zoo.ops.deform_roi_pool import DeformRoIPool, ModulatedDeformRoIPool
from zoo.tasks.object_detection import DetectionPostprocess, DetectionTransforms

# the registry entries' constructor arguments
ENTRIES = {
    "faster-rcnn-r50-dcn": (faster_rcnn, {"dcn": "dcn"}),
    "faster-rcnn-r50-mdcn": (faster_rcnn, {"dcn": "mdcn"}),
    "faster-rcnn-r50-dpool": (faster_rcnn, {"roi_pool": "dpool"}),
    "faster-rcnn-r50-mdpool": (faster_rcnn, {"roi_pool": "mdpool"}),
    "mask-rcnn-r50-dcn": (mask_rcnn, {"dcn": "dcn"}),
    "mask-rcnn-r50-mdcn": (mask_rcnn, {"dcn": "mdcn"}),
}
SMALL = {"min_size": 64, "max_size": 128, "box_detections_per_img": 10, "rpn_pre_nms_top_n_test": 50, "rpn_post_nms_top_n_test": 20,
         "rpn_pre_nms_top_n_train": 50, "rpn_post_nms_top_n_train": 20, "box_batch_size_per_image": 16,
         "rpn_batch_size_per_image": 32, "box_score_thresh": 0.0}
BLOCKS = (3, 4, 6, 3)


def build(name: str, **extra):
    fn, args = ENTRIES[name]
    return fn(**args, **extra)


def tv_param_count(mask: bool) -> int:
    """torchvision's own R50-FPN detector with 91 classes (same heads, plain convs, no deformable pooling),
    without BatchNorm affine parameters (torchvision uses trainable BN when built without weights; zoo's
    frozen BN keeps them as buffers)."""
    fn = torchvision.models.detection.maskrcnn_resnet50_fpn if mask else torchvision.models.detection.fasterrcnn_resnet50_fpn
    with torch.device("meta"):
        model = fn(weights=None, weights_backbone=None, num_classes=91)
    bn = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    return sum(p.numel() for p in model.parameters()) - bn


# ------------------------------------------------------------------------------------------- 1. build
@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_builds_on_meta_with_expected_parameters(name):
    with torch.device("meta"):
        model = build(name)
    params = dict(model.named_parameters())
    assert params and all(p.is_meta for p in params.values())
    _, args = ENTRIES[name]
    extra = 0
    if "dcn" in args:  # conv_offset (3x3, 2 or 3 * 9 channels, bias) in 13 blocks of layer2..4
        parts = 2 if args["dcn"] == "dcn" else 3
        extra = sum(n * (parts * 9 * planes * 9 + parts * 9) for n, planes in zip(BLOCKS[1:], (128, 256, 512)))
    if "roi_pool" in args:  # one offset predictor per FPN level (4), as mmdet
        bins, fc_in = 49, 49 * 256
        extra = 4 * (fc_in * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 2 * bins + 2 * bins)
        if args["roi_pool"] == "mdpool":
            extra += 4 * (fc_in * 1024 + 1024 + 1024 * bins + bins)
    assert sum(p.numel() for p in params.values()) == tv_param_count(name.startswith("mask")) + extra


@pytest.mark.parametrize("kind,cls", [("dcn", DeformConv2d), ("mdcn", ModulatedDeformConv2d)])
def test_deformable_convs_sit_in_conv2_of_layer2_to_4(kind, cls):
    with torch.device("meta"):
        model = faster_rcnn(dcn=kind)
    deformable = sorted(n for n, m in model.named_modules() if isinstance(m, (DeformConv2d, ModulatedDeformConv2d)))
    expected = sorted(f"backbone.body.layer{layer}.{b}.conv2" for layer, n in zip((2, 3, 4), BLOCKS[1:]) for b in range(n))
    assert deformable == expected and len(deformable) == 13
    assert all(type(model.get_submodule(n)) is cls for n in deformable)
    assert all(model.get_submodule(n).bias is None for n in deformable)  # mmdet: conv2 has no bias
    assert type(model.backbone.body.layer1[0].conv2) is nn.Conv2d
    strides = [model.get_submodule(f"backbone.body.layer{i}.0.conv2").stride for i in (2, 3, 4)]
    assert strides == [(2, 2)] * 3


@pytest.mark.parametrize("kind,cls", [("dpool", DeformRoIPool), ("mdpool", ModulatedDeformRoIPool)])
def test_box_pooler_is_deformable(kind, cls):
    with torch.device("meta"):
        model = faster_rcnn(roi_pool=kind)
    pool = model.roi_heads.box_roi_pool
    assert isinstance(pool, MultiScaleDeformRoIPool) and pool.kind == kind
    assert [type(m) for m in pool.roi_layers] == [cls] * 4
    assert [m.spatial_scale for m in pool.roi_layers] == [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    assert all(m.output_size == (7, 7) and m.gamma == 0.1 for m in pool.roi_layers)
    assert "roi_heads.box_roi_pool.roi_layers.3.offset_fc.4.weight" in model.state_dict()
    assert not any(isinstance(m, (DeformConv2d, ModulatedDeformConv2d)) for m in model.modules())


def test_bad_arguments():
    with pytest.raises(ValueError, match="dcn"):
        faster_rcnn(dcn="dcnv3")
    with pytest.raises(ValueError, match="roi_pool"):
        faster_rcnn(roi_pool="psroi")
    with pytest.raises(ValueError, match="dcn_stages"):
        faster_rcnn(dcn="dcn", dcn_stages=(5,))


# ------------------------------------------------------------------------------------------- 2. RoI pooler
def _features(seed=0, channels=8):
    g = torch.Generator().manual_seed(seed)
    return {str(i): torch.randn(2, channels, 480 // s, 640 // s, generator=g) for i, s in enumerate((4, 8, 16, 32))}


def _boxes(seed=0):
    """Two images' boxes with sqrt(w * h) on all four FPN levels (boundaries 112, 224, 448 px avoided)."""
    g = torch.Generator().manual_seed(seed)
    sizes = torch.tensor([20.0, 60, 100, 130, 200, 250, 300, 470, 520, 30, 180, 90, 460, 240, 50])
    ratio = torch.exp(torch.empty(15).uniform_(-0.3, 0.3, generator=g))
    wh = torch.stack([sizes * ratio, sizes / ratio], 1)
    xy = torch.rand(15, 2, generator=g) * torch.tensor([100.0, 50.0])
    boxes = torch.cat([xy, xy + wh], 1)
    return [boxes[:9], boxes[9:]]


@pytest.mark.parametrize("sampling_ratio", [2, 0])
def test_pooler_equals_multiscale_roialign_at_zero_offsets(monkeypatch, sampling_ratio):
    feats, boxes, shapes = _features(), _boxes(), [(480, 640), (480, 640)]
    # torchvision's MultiScaleRoIAlign with mmcv's aligned=True sampling is the reference
    monkeypatch.setattr(torchvision.ops.poolers, "roi_align",
                        lambda *a, **k: roi_align(*a, **k, aligned=True))
    ref = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, sampling_ratio)(feats, boxes, shapes)
    levels = set(MultiScaleDeformRoIPool(["0", "1", "2", "3"], 7, (4, 8, 16, 32)).map_levels(
        torch.cat([torch.zeros(15, 1), torch.cat(boxes)], 1)).tolist())
    assert levels == {0, 1, 2, 3}
    for kind, scale in (("roi_align", 1.0), ("dpool", 1.0), ("mdpool", 0.5)):
        pool = MultiScaleDeformRoIPool(["0", "1", "2", "3"], 7, (4, 8, 16, 32), kind=kind, channels=8,
                                       sampling_ratio=sampling_ratio, deform_fc_channels=16)
        torch.testing.assert_close(pool(feats, boxes, shapes), scale * ref, rtol=1e-5, atol=1e-5)


def test_pooler_offsets_move_the_bins():
    feats, boxes = _features(), _boxes()
    pool = MultiScaleDeformRoIPool(["0", "1", "2", "3"], 7, (4, 8, 16, 32), kind="dpool", channels=8,
                                   sampling_ratio=2, deform_fc_channels=16)
    plain = pool(feats, boxes)
    with torch.no_grad():
        for layer in pool.roi_layers:
            layer.offset_fc[4].bias.uniform_(-0.5, 0.5)
    moved = pool(feats, boxes)
    assert moved.shape == plain.shape == (15, 8, 7, 7)
    assert (moved - plain).abs().amax(dim=(1, 2, 3)).min() > 1e-3  # every RoI, on every level, moved
    with pytest.raises(InputError, match="missing"):
        pool({"0": feats["0"]}, boxes)


# ------------------------------------------------------------------------------------------- 3. forward
def test_eval_forward_and_meta_build_then_load():
    torch.manual_seed(0)
    model = build("faster-rcnn-r50-dcn", **SMALL).eval()
    with torch.no_grad():  # non-zero offsets so the deformable path matters
        for m in model.modules():
            if isinstance(m, DeformConv2d):
                m.conv_offset.weight.normal_(0, 0.01)
    images = [torch.rand(3, 96, 128)]
    with torch.no_grad():
        out = model(images)
    assert isinstance(out, list) and len(out) == 1
    for det, img in zip(out, images):
        assert set(det) == {"boxes", "scores", "labels"}
        k = det["boxes"].shape[0]
        assert 0 < k <= 10 and det["scores"].shape == det["labels"].shape == (k,)
        assert det["labels"].dtype == torch.int64 and det["labels"].min() >= 1 and det["labels"].max() <= 90
        assert (det["boxes"][:, 2:] <= torch.tensor([img.shape[2], img.shape[1]])).all()
        assert (det["boxes"][:, :2] >= 0).all()
    # a meta build (as zoo.create with weights) loads and runs identically (anchors are recomputed)
    with torch.device("meta"):
        meta = build("faster-rcnn-r50-dcn", **SMALL)
    meta.load_state_dict(model.state_dict(), strict=True, assign=True)
    meta.eval()
    with torch.no_grad():
        again = meta(images)
    for a, b in zip(out, again):
        for key in a:
            torch.testing.assert_close(a[key], b[key])


def _target(mask: bool):
    t = {"boxes": torch.tensor([[20.0, 30.0, 90.0, 90.0], [60.0, 10.0, 120.0, 70.0]]),
         "labels": torch.tensor([1, 18])}
    if mask:
        m = torch.zeros(2, 96, 128, dtype=torch.uint8)
        m[0, 30:90, 20:90] = 1
        m[1, 10:70, 60:120] = 1
        t["masks"] = m
    return t


@pytest.mark.parametrize("name", ["mask-rcnn-r50-mdcn", "faster-rcnn-r50-mdpool"])
def test_training_returns_losses_and_trains_the_offsets(name):
    torch.manual_seed(0)
    mask = name.startswith("mask")
    # narrow offset fcs (deform_fc_channels) keep the deformable-pooling backward cheap on CPU
    model = build(name, **SMALL, **({} if mask else {"deform_fc_channels": 32})).train()
    losses = model([torch.rand(3, 96, 128)], [_target(mask)])
    expected = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"} | ({"loss_mask"} if mask else set())
    assert set(losses) == expected and all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    sum(losses.values()).backward()
    assert model.backbone.body.conv1.weight.grad is None  # stem and layer1 frozen (mmdet frozen_stages=1)
    assert model.backbone.body.layer1[0].conv2.weight.grad is None
    if mask:
        grads = [m.conv_offset.weight.grad for m in model.modules() if isinstance(m, ModulatedDeformConv2d)]
        assert len(grads) == 13 and all(g is not None and g.abs().sum() > 0 for g in grads)
    else:
        pool = model.roi_heads.box_roi_pool
        assert any(layer.offset_fc[4].weight.grad.abs().sum() > 0 for layer in pool.roi_layers)
        assert any(layer.mask_fc[2].weight.grad.abs().sum() > 0 for layer in pool.roi_layers)


def test_mask_rcnn_eval_and_detection_presets():
    torch.manual_seed(0)
    model = build("mask-rcnn-r50-dcn", **SMALL).eval()
    images = (torch.rand(1, 3, 90, 120) * 255).to(torch.uint8)
    inputs = DetectionTransforms()(images)
    assert len(inputs) == 1 and inputs[0].shape == (3, 90, 120) and inputs[0].dtype == torch.float32
    assert inputs[0].max() <= 1.0
    with torch.no_grad():
        out = model(inputs)
    assert out[0]["masks"].shape[1:] == (1, 90, 120)
    post = DetectionPostprocess(score_threshold=0.0)(out, images.shape[-2:])
    for det, raw in zip(post, out):
        k = raw["boxes"].shape[0]
        assert k > 0 and det["masks"].shape == (k, 90, 120) and det["masks"].dtype == torch.bool
        torch.testing.assert_close(det["masks"], raw["masks"][:, 0] > 0.5)
    with pytest.raises(InputError, match="input size"):
        DetectionPostprocess()(out, (100, 100))


def test_detection_presets_without_a_model():
    out = [{"boxes": torch.tensor([[0.0, 0, 5, 5], [1, 1, 4, 4]]), "scores": torch.tensor([0.9, 0.2]),
            "labels": torch.tensor([3, 7])}]
    post = DetectionPostprocess(score_threshold=0.5)(out, [(10, 10)])
    assert post[0]["labels"].tolist() == [3] and post[0]["boxes"].shape == (1, 4)
    imgs = DetectionTransforms()([torch.rand(3, 5, 7), (torch.rand(3, 4, 4) * 255).byte()])
    assert [tuple(i.shape) for i in imgs] == [(3, 5, 7), (3, 4, 4)] and imgs[1].dtype == torch.float32
    with pytest.raises(InputError):
        DetectionTransforms()(torch.rand(2, 1, 5, 5))
    with pytest.raises(InputError):
        DetectionTransforms()([torch.rand(5, 5)])
    with pytest.raises(InputError, match="list of dicts"):
        DetectionPostprocess()(torch.rand(1, 4))


def test_pooler_without_boxes():
    feats = _features()
    for kind in ("roi_align", "dpool", "mdpool"):
        pool = MultiScaleDeformRoIPool(["0", "1", "2", "3"], 7, (4, 8, 16, 32), kind=kind, channels=8,
                                       deform_fc_channels=16)
        assert pool(feats, [torch.zeros(0, 4), torch.zeros(0, 4)]).shape == (0, 8, 7, 7)


def test_adaptive_deform_pooling_grouped_by_grid_equals_one_call():
    feats, boxes = _features(), _boxes(1)
    pool = MultiScaleDeformRoIPool(["0", "1", "2", "3"], 7, (4, 8, 16, 32), kind="mdpool", channels=8,
                                   sampling_ratio=0, deform_fc_channels=16)
    with torch.no_grad():
        for layer in pool.roi_layers:
            layer.offset_fc[4].bias.uniform_(-0.3, 0.3)
            layer.mask_fc[2].bias.uniform_(-1, 1)
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], 1) for i, b in enumerate(boxes)])
    levels = pool.map_levels(rois)
    expected = torch.zeros(len(rois), 8, 7, 7)
    for level, layer in enumerate(pool.roi_layers):  # one call per level: every RoI on the level's largest grid
        idx = torch.where(levels == level)[0]
        expected[idx] = layer(feats[str(level)], rois[idx])
    assert len(set(levels.tolist())) == 4
    torch.testing.assert_close(pool(feats, boxes), expected, rtol=1e-5, atol=1e-6)
