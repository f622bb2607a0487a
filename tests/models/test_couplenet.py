"""CoupleNet and CoupleNet + LS-DFN (zoo.models.couplenet): the authors' released layout
(tshizys/CoupleNet@3187614dc35c4f52e560c6ad9f2550d37bae7b81 test_agnostic.prototxt). Real forwards run at
160 x 192 with few proposals; the heavy checks build on the meta device."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_pool

from zoo.layers import LSDFNBranch
from zoo.layers.rfcn import inclusive_roi_rows, ps_roi_vote
from zoo.models.couplenet import CoupleNetRoIHeads, couplenet
from zoo.models.resnet import resnet
from zoo.models.rfcn import rfcn

from models.test_rfcn import LSDFN_ARGS, SMALL, n_params, tame, training_step

ENTRIES = {"couplenet-r101": {}, "couplenet-lsdfn-r101": {"lsdfn": LSDFN_ARGS}}  # the registry entries' arguments


def tame_global(model: nn.Module) -> nn.Module:
    """R-FCN's tame() (zero RPN deltas and PS score maps) and zero global scores: proposals are clipped
    anchors and every class has p = 1/21."""
    with torch.no_grad():
        for conv in (model.roi_heads.global_cls_score, model.roi_heads.global_bbox_pred):
            conv.weight.zero_()
            conv.bias.zero_()
    return tame(model)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: tame_global(couplenet(**args, **SMALL)) for name, args in ENTRIES.items()}


# ------------------------------------------------------------------------------------------- 1. build
@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_builds_on_meta_with_the_prototxt_layers(name):
    args = ENTRIES[name]
    with torch.device("meta"):
        model = couplenet(**args)
        host = rfcn(num_classes=21, anchor_sizes=(128, 256, 512), **args)  # the R-FCN part: VOC, 9 anchors
        branch = LSDFNBranch(2048, **LSDFN_ARGS) if args.get("lsdfn") else None
    assert all(p.is_meta for p in model.parameters())
    # conv_pool5 7x7 1024 -> 1024, conv_pool5_1 1x1, global_cls_score -> 21, global_bbox_pred -> 8,
    # conv/local_cls_score 21 -> 21, all with bias
    extra = (1024 * 1024 * 49 + 1024) + (1024 * 1024 + 1024) + (1024 * 21 + 21) + (1024 * 8 + 8) + (21 * 21 + 21)
    assert n_params(model) == n_params(host) + extra
    heads = model.roi_heads
    assert isinstance(heads, CoupleNetRoIHeads)
    assert (heads.rfcn_cls.out_channels, heads.rfcn_bbox.out_channels) == (1029, 392)  # local_cls, local_bbox
    assert heads.conv_pool5.kernel_size == (7, 7) and heads.conv_pool5.padding == (0, 0)
    assert heads.conv_new_1.in_channels == 2048 + (24 if branch is not None else 0)
    assert model.rpn.head.cls_logits.out_channels == 18 and model.rpn.head.bbox_pred.out_channels == 36
    assert model.rpn.anchor_generator.sizes == ((128, 256, 512),)
    # py-R-FCN's PIXEL_MEANS, RGB, on the 0..1 scale; no std (1/255)
    torch.testing.assert_close(torch.tensor(model.transform.image_mean) * 255,
                               torch.tensor([122.7717, 115.9465, 102.9801]))
    assert model.transform.image_std == [1 / 255] * 3
    body = model.backbone.body
    assert all(b.conv2.dilation == (2, 2) for b in body.layer4) and isinstance(body, type(resnet(depth=18)))


# ------------------------------------------------------------------------------------------- 2. head
def test_scores_are_the_sum_of_the_global_and_normalised_local_branches():
    torch.manual_seed(0)
    head = CoupleNetRoIHeads(32, 4, group_size=3, mid_channels=16, global_channels=8).eval()
    for m in head.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.3)
            nn.init.normal_(m.bias, std=0.3)
    c5 = torch.randn(2, 32, 10, 12)
    proposals = [torch.tensor([[0.0, 0, 100, 90], [30, 20, 150, 120]]), torch.tensor([[50.0, 40, 190, 150]])]
    cls, box = head.predict(c5, proposals)
    # by the prototxt, with plain torch ops
    x = F.relu(head.conv_new_1(c5))
    local_cls = ps_roi_vote(head.rfcn_cls(x), proposals, 3, 1 / 16)
    local_box = ps_roi_vote(head.rfcn_bbox(x), proposals, 3, 1 / 16)
    rows = torch.tensor([[0.0, 0, 0, 99, 89], [0, 30, 20, 149, 119], [1, 50, 40, 189, 149]])  # inclusive boxes
    torch.testing.assert_close(inclusive_roi_rows(proposals), rows)
    pooled = roi_pool(x, rows, (3, 3), 1 / 16)
    g = F.relu(head.conv_pool5_1(F.relu(head.conv_pool5(pooled))))
    assert g.shape == (3, 8, 1, 1)
    expected_cls = head.global_cls_score(g).flatten(1) + local_cls @ head.local_cls_conv.weight[:, :, 0, 0].T \
        + head.local_cls_conv.bias
    expected_box = head.global_bbox_pred(g).flatten(1) + local_box
    torch.testing.assert_close(cls, expected_cls)
    assert box.shape == (3, 4 * 4)
    torch.testing.assert_close(box, expected_box[:, 4:8].repeat(1, 4))  # class-agnostic: fg deltas for every class


def test_new_layers_are_gaussian_initialised():
    head = CoupleNetRoIHeads(64, 5, group_size=3, mid_channels=32, global_channels=256)
    for name in ("conv_pool5", "conv_pool5_1", "global_cls_score", "global_bbox_pred", "local_cls_conv"):
        conv = getattr(head, name)
        assert torch.count_nonzero(conv.bias) == 0
        assert 0.007 < float(conv.weight.detach().std()) < 0.013, name


# ------------------------------------------------------------------------------------------- 3. forward
@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_eval_forward_gives_voc_labels(models, name):
    model = models[name].eval()
    images = [torch.rand(3, 160, 192)]
    with torch.no_grad():
        out = model(images)
    det = out[0]
    k = det["boxes"].shape[0]
    assert 0 < k <= 100 and det["boxes"].shape == (k, 4) and set(det) == {"boxes", "scores", "labels"}
    assert set(det["labels"].tolist()) <= set(range(1, 21))
    torch.testing.assert_close(det["scores"], torch.full((k,), 1 / 21))  # zeroed scores: uniform softmax
    # the global branch alone decides the class when its bias says so: class 7 everywhere
    with torch.no_grad():
        model.roi_heads.global_cls_score.bias[7] = 10.0
        out = model(images)
        model.roi_heads.global_cls_score.bias.zero_()
    assert out[0]["labels"].numel() > 0 and set(out[0]["labels"].tolist()) == {7}


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_training_returns_losses_and_gradients_in_both_branches(models, name):
    model = models[name]
    training_step(model, [1, 20])
    heads = model.roi_heads
    for conv in (heads.rfcn_cls, heads.global_cls_score, heads.global_bbox_pred):
        assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert heads.local_cls_conv.bias.grad.abs().sum() > 0  # its weight's gradient is 0: tame() zeroed its input
    assert heads.conv_pool5.weight.grad is not None and heads.conv_new_1.weight.grad is not None
    assert model.backbone.body.layer1[0].conv1.weight.grad is None  # frozen res2 / stem
    if heads.lsdfn is not None:
        assert heads.lsdfn.lsdfn.kernel_u.weight.grad is not None
    model.eval()

