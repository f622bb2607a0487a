"""CondInst (zoo.models.condinst): structure against torchvision's FCOS, real forwards on small images
with random weights, and the mask plumbing against an independent recomputation."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from zoo.data.coco import COCO_IDS
from zoo.errors import InputError
from zoo.models.condinst import condinst
from zoo.ops.dynamic_mask_head import DynamicMaskHead, aligned_bilinear, dynamic_mask_head_reference
from zoo.tasks.object_detection import DetectionPostprocess

SMALL = {"min_size": 128, "max_size": 160}
CONTROLLER = 169 * 256 * 9 + 169
MASK_BRANCH = 3 * (256 * 128 * 9 + 2 * 128) + 4 * (128 * 128 * 9 + 2 * 128) + 128 * 8 + 8


def tv_fcos(depth: int) -> FCOS:
    """torchvision's FCOS (ResNet-FPN P3-P7, P6/P7 from P5, 4-conv GN towers), 80 classes."""
    backbone = resnet_fpn_backbone(backbone_name=f"resnet{depth}", weights=None, trainable_layers=3,
                                   returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
    return FCOS(backbone, 80)


def live_model(**kwargs) -> nn.Module:
    """Random weights with detections: class bias 0 (score ~0.25 > 0.05), boxes of ~2 strides, and mask
    features of order 1 (unsaturated mask probabilities, so the mask tests see every input)."""
    torch.manual_seed(0)
    model = condinst(**SMALL, **kwargs).eval()
    with torch.no_grad():
        model.head.cls_logits.bias.zero_()
        model.head.bbox_pred.bias.fill_(2.0)
        model.mask_branch.tower[-1].weight.mul_(0.01)
    return model


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return live_model()


# ------------------------------------------------------------------------------------------- 1. build
@pytest.mark.parametrize("depth", [50, 101])
def test_builds_on_meta_with_torchvision_fcos_parameters_plus_condinst_parts(depth):
    with torch.device("meta"):
        model = condinst(depth=depth)
        tv = tv_fcos(depth)
    params = dict(model.named_parameters())
    assert all(p.is_meta for p in params.values())
    # zoo freezes BN (FrozenBatchNorm2d buffers); torchvision built without weights has trainable BN
    bn = sum(p.numel() for m in tv.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    tv_count = sum(p.numel() for p in tv.parameters()) - bn
    assert sum(p.numel() for p in params.values()) == tv_count + 5 + CONTROLLER + MASK_BRANCH
    tv_backbone = {k for k in tv.state_dict() if k.startswith("backbone.") and "num_batches_tracked" not in k}
    assert {k for k in model.state_dict() if k.startswith("backbone.")} == tv_backbone


def test_controller_and_dynamic_head_from_zoo_ops():
    with torch.device("meta"):
        model = condinst()
    assert type(model.mask_head) is DynamicMaskHead
    assert model.mask_head.num_gen_params == 169 == model.head.controller.out_channels
    assert (model.mask_head.weight_nums, model.mask_head.bias_nums) == ([80, 64, 8], [8, 8, 1])
    assert model.head.controller.kernel_size == (3, 3)
    assert sum(p.numel() for p in model.head.controller.parameters()) == CONTROLLER
    assert model.mask_branch.tower[-1].out_channels == 8


@pytest.mark.parametrize("style,stride_in_1x1,std", [("caffe", True, 1 / 255), ("pytorch", False, 0.229)])
def test_styles(style, stride_in_1x1, std):
    with torch.device("meta"):
        model = condinst(style=style)
    block = model.backbone.body.layer2[0]
    assert (block.conv1.stride, block.conv2.stride) == (((2, 2), (1, 1)) if stride_in_1x1 else ((1, 1), (2, 2)))
    assert model.transform.image_std[0] == pytest.approx(std)
    assert not model.backbone.body.layer1[0].conv1.weight.requires_grad  # FREEZE_AT=2
    assert model.backbone.body.layer2[0].conv1.weight.requires_grad


def test_bad_arguments():
    with pytest.raises(ValueError, match="style"):
        condinst(style="msra")
    with pytest.raises(ValueError, match="label_ids"):
        condinst(num_classes=3, label_ids=[1, 2])


# ------------------------------------------------------------------------------------------- 2. same as torchvision
def test_backbone_and_head_compute_torchvision_fcos():
    """zoo's pytorch-style backbone + FCOS head, loaded with a torchvision FCOS's weights (Scale = 1),
    give torchvision's FPN features, class logits, ReLU distances and centre-ness."""
    torch.manual_seed(0)
    tv = tv_fcos(50).eval()
    with torch.no_grad():
        for m in tv.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 1.5), m.weight.uniform_(0.5, 1.5)
        for m in tv.head.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.normal_(0, 0.05), m.bias.normal_(0, 0.1)
    names = {"head.classification_head.conv.": "head.cls_tower.", "head.regression_head.conv.": "head.bbox_tower.",
             "head.classification_head.cls_logits.": "head.cls_logits.", "head.regression_head.bbox_reg.": "head.bbox_pred.",
             "head.regression_head.bbox_ctrness.": "head.ctrness."}
    state = {}
    for k, v in tv.state_dict().items():
        if "num_batches_tracked" in k:
            continue
        for old, new in names.items():
            k = k.replace(old, new)
        state[k] = v
    model = condinst(style="pytorch", **SMALL).eval()
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith(("head.scales", "head.controller", "mask_")) for k in missing)
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        tv_feats = list(tv.backbone(x).values())
        feats = list(model.backbone(x).values())
        tv_out = tv.head(tv_feats)
        logits, dist, ctr, params = model.head(feats)
    assert [f.shape[-2:] for f in feats] == [(16, 20), (8, 10), (4, 5), (2, 3), (1, 2)]
    for a, b in zip(feats, tv_feats):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    flat = lambda ts: torch.cat([t.permute(0, 2, 3, 1).flatten(1, 2) for t in ts], 1)  # noqa: E731
    torch.testing.assert_close(flat(logits), tv_out["cls_logits"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(flat(dist), tv_out["bbox_regression"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(flat(ctr), tv_out["bbox_ctrness"], rtol=1e-4, atol=1e-4)
    assert [p.shape[1] for p in params] == [169] * 5


# ------------------------------------------------------------------------------------------- 3. forward
def test_forward_output_structure_and_determinism(model):
    x = torch.rand(1, 3, 128, 160)
    with torch.no_grad():
        out, again = model(x), model(x)
    assert isinstance(out, list) and len(out) == 1
    det = out[0]
    assert set(det) == {"boxes", "scores", "labels", "masks"}
    k = det["scores"].shape[0]
    assert 0 < k <= 100
    assert det["boxes"].shape == (k, 4) and det["labels"].shape == (k,) and det["labels"].dtype == torch.int64
    assert det["masks"].shape == (k, 1, 128, 160) and det["masks"].dtype == torch.float32
    assert 0 <= det["masks"].min() and det["masks"].max() <= 1
    assert ((det["masks"] > 0.01) & (det["masks"] < 0.99)).float().mean() > 0.5  # probabilities, not 0/1
    assert set(det["labels"].tolist()) <= set(COCO_IDS)
    assert torch.all(det["scores"][:-1] >= det["scores"][1:])  # sorted
    assert torch.all(det["scores"] ** 2 > 0.05 - 1e-6)  # thresholded on cls * ctrness, reported sqrt
    b = det["boxes"]
    assert torch.all((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])) and b.min() >= 0
    assert b[:, 2].max() <= 160 and b[:, 3].max() <= 128
    for key in det:
        torch.testing.assert_close(det[key], again[0][key], rtol=0, atol=0)


def test_batch_of_images_of_any_size(model):
    """Two sizes that are not multiples of 32, one resized (shorter side -> 128) and padded: every output
    is at its own input's size, and the postprocess preset binarises the masks."""
    images = [torch.rand(3, 100, 150), torch.rand(3, 90, 60)]
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for det, image in zip(out, images):
        h, w = image.shape[-2:]
        assert det["masks"].shape[1:] == (1, h, w)
        assert det["boxes"][:, 2].max() <= w and det["boxes"][:, 3].max() <= h
    post = DetectionPostprocess(score_threshold=0.3)(out, [im.shape for im in images])
    assert post[0]["masks"].dtype == torch.bool and post[0]["masks"].shape[1:] == (100, 150)
    assert torch.all(post[1]["scores"] >= 0.3)


def test_masks_match_an_independent_recomputation(model):
    """Output mask of detection 0 of image 1 = sigmoid of the dynamic FCN (reference loop) on
    [relative coords, that image's mask features], upsampled x2 and x4 (aligned), cropped to the resized
    image and resized to the input."""
    images = [torch.rand(3, 120, 150), torch.rand(3, 90, 112)]
    with torch.no_grad():
        out = model(images)
        image_list, _ = model.transform(images)
        feats = list(model.backbone(image_list.tensors).values())
        logits, dist, ctr, params = model.head(feats)
        mask_feats = model.mask_branch(feats[:3])
        det = model._detect_single(1, logits, dist, ctr, params)
    n = 0
    level, (x, y) = int(det["levels"][n]), det["locations"][n].tolist()
    hf, wf = mask_feats.shape[-2:]
    py, px = torch.meshgrid(torch.arange(hf) * 8.0 + 4, torch.arange(wf) * 8.0 + 4, indexing="ij")
    soi = (64, 128, 256, 512, 1024)[level]
    rel = torch.stack([(x - px) / soi, (y - py) / soi])
    inputs = torch.cat([rel, mask_feats[1]])[None]
    with torch.no_grad():
        logit = dynamic_mask_head_reference(inputs, det["params"][n:n + 1], 8, [80, 64, 8], [8, 8, 1])
    prob = aligned_bilinear(aligned_bilinear(logit, 2).sigmoid(), 4)
    rh, rw = image_list.image_sizes[1]
    expected = F.interpolate(prob[:, :, :rh, :rw], size=(90, 112), mode="bilinear", align_corners=False)[0]
    scores = out[1]["scores"]
    match = torch.nonzero(scores == det["scores"][n])[0, 0]
    torch.testing.assert_close(out[1]["masks"][match], expected, rtol=1e-4, atol=1e-5)
    assert out[1]["labels"][match] == COCO_IDS[int(det["classes"][n])]


def test_label_ids_for_other_class_counts():
    model = live_model(num_classes=3)
    with torch.no_grad():
        out = model(torch.rand(1, 3, 128, 160))
    assert set(out[0]["labels"].tolist()) <= {1, 2, 3} and len(out[0]["labels"]) > 0


def test_no_detections_gives_empty_outputs():
    torch.manual_seed(0)
    model = condinst(**SMALL).eval()  # prior-probability bias: sigmoid 0.01 x ctrness 0.5 < 0.05
    with torch.no_grad():
        out = model([torch.rand(3, 128, 160)])
    assert out[0]["boxes"].shape == (0, 4) and out[0]["masks"].shape == (0, 1, 128, 160)


def test_errors(model):
    with pytest.raises(InputError, match="C=3"):
        model(torch.rand(1, 4, 64, 64))
    with pytest.raises(InputError, match="only in training mode"):   # training: tests/models/test_condinst_training.py
        model([torch.rand(3, 64, 64)], [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}])


def test_float64_forward_matches_float32():
    model = live_model()
    x = torch.rand(1, 3, 128, 160)
    with torch.no_grad():
        ref = model(x)[0]
        out = model.double()(x.double())[0]
    assert out["boxes"].dtype == out["masks"].dtype == torch.float64
    torch.testing.assert_close(out["scores"][:10].float(), ref["scores"][:10], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["boxes"][:10].float(), ref["boxes"][:10], rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(out["masks"][:10].float(), ref["masks"][:10], rtol=1e-4, atol=1e-4)
