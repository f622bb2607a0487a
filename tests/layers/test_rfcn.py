"""The R-FCN parts (zoo.layers.rfcn) that R-FCN and CoupleNet share: head arguments, PS RoI voting, the RPN
head's objectness, the head's (deformable) PS pooling of the maps, OHEM. The assembled models:
tests/models/test_rfcn.py and tests/models/test_couplenet.py."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from zoo.layers.rfcn import RFCNRoIHeads, RFCNRPNHead, inclusive_roi_rows, ps_roi_vote
from zoo.ops.deform_ps_roi_pool import deform_ps_roi_pool


# ------------------------------------------------------------------------------------------- 1. exceptions
def test_bad_arguments():
    with pytest.raises(ValueError, match="in_channels"):
        RFCNRoIHeads(64, 5, lsdfn={"in_channels": 64})
    with pytest.raises(ValueError, match="num_classes"):
        RFCNRoIHeads(64, 1)
    with pytest.raises(ValueError, match="ohem_rois"):
        RFCNRoIHeads(64, 5, ohem_rois=0)


# ------------------------------------------------------------------------------------------- 2. parts
def test_ps_roi_vote_hand_computed():
    # k = 2, C = 2: 8 score maps of 6 x 6, value 100 * channel + 10 * y + x
    y, x = torch.meshgrid(torch.arange(6.0), torch.arange(6.0), indexing="ij")
    maps = torch.stack([100 * c + 10 * y + x for c in range(8)]).unsqueeze(0).repeat(2, 1, 1, 1)
    maps[1] += 1000
    # RoI x 1..5, y 1..3: bins rows [1,2) [2,3), cols [1,3) [3,5); bin (i, j) of class c reads channel
    # (c*2 + i)*2 + j. Class 0: (11.5 + 113.5 + 221.5 + 323.5) / 4 = 167.5; class 1: +400.
    rois = torch.tensor([[0, 1.0, 1, 5, 3], [1, 1.0, 1, 5, 3], [0, 0.0, 0, 4, 4]])
    out = ps_roi_vote(maps, rois, 2, 1.0)
    # third RoI, x and y 0..4, bins [0,2) [2,4): class 0 = (5.5 + 107.5 + 225.5 + 327.5) / 4 = 166.5
    expected = torch.tensor([[167.5, 567.5], [1167.5, 1567.5], [166.5, 566.5]])
    torch.testing.assert_close(out, expected)
    # the head's scale: boxes in image pixels, map at stride 16
    torch.testing.assert_close(ps_roi_vote(maps, [rois[:1, 1:] * 16], 2, 1 / 16), expected[:1])


def test_rpn_head_objectness_is_the_two_way_softmax():
    torch.manual_seed(0)
    head = RFCNRPNHead(16, num_anchors=3, mid_channels=8)
    nn.init.normal_(head.cls_logits.weight, std=1.0)
    x = torch.randn(2, 16, 5, 7)
    (obj,), (deltas,) = head([x])
    assert obj.shape == (2, 3, 5, 7) and deltas.shape == (2, 12, 5, 7)
    scores = head.cls_logits(torch.relu(head.conv(x)))  # (B, 2A, H, W): A bg, then A fg
    softmax_fg = torch.softmax(scores.view(2, 2, 3, 5, 7), dim=1)[:, 1]
    torch.testing.assert_close(torch.sigmoid(obj), softmax_fg)


def test_head_predict_is_ps_pooling_of_the_maps_with_agnostic_boxes():
    torch.manual_seed(0)
    head = RFCNRoIHeads(32, 4, group_size=3, mid_channels=16).eval()
    for conv in (head.rfcn_cls, head.rfcn_bbox):
        nn.init.normal_(conv.weight, std=0.5)
    c5 = torch.randn(2, 32, 10, 12)
    proposals = [torch.tensor([[0.0, 0, 100, 90], [30, 20, 150, 120]]), torch.tensor([[50.0, 40, 190, 150]])]
    cls, box = head.predict(c5, proposals)
    feats = torch.relu(head.conv_new_1(c5))
    torch.testing.assert_close(cls, ps_roi_vote(head.rfcn_cls(feats), proposals, 3, 1 / 16))
    pooled = ps_roi_vote(head.rfcn_bbox(feats), proposals, 3, 1 / 16)
    assert head.rfcn_bbox.out_channels == 9 * 8 and box.shape == (3, 4 * 4)
    torch.testing.assert_close(box, pooled[:, 4:8].repeat(1, 4))  # fg deltas for every class


def test_deformable_head_predict_is_deformable_ps_pooling_of_inclusive_rois():
    torch.manual_seed(0)
    head = RFCNRoIHeads(32, 4, group_size=3, mid_channels=16, deform_psroi=True).eval()
    for conv in (head.rfcn_cls, head.rfcn_bbox, head.rfcn_cls_pool.conv_offset, head.rfcn_bbox_pool.conv_offset):
        nn.init.normal_(conv.weight, std=0.5)
    c5 = torch.randn(2, 32, 10, 12)
    proposals = [torch.tensor([[0.0, 0, 100, 90], [30, 20, 150, 120]]), torch.tensor([[50.0, 40, 190, 150]])]
    rows = inclusive_roi_rows(proposals)
    expected_rows = [[0.0, 0, 0, 99, 89], [0, 30, 20, 149, 119], [1, 50, 40, 189, 149]]  # x2 - 1, y2 - 1
    torch.testing.assert_close(rows, torch.tensor(expected_rows))
    cls, box = head.predict(c5, proposals)
    feats = torch.relu(head.conv_new_1(c5))

    def pooled(maps, pool, classes):
        offsets = deform_ps_roi_pool(pool.conv_offset(feats), rows, None, 3, None, None, 4, 0.1, 1 / 16)
        assert offsets.shape == (3, 2 * classes, 3, 3)
        return deform_ps_roi_pool(maps, rows, offsets, 3, None, None, 4, 0.1, 1 / 16).mean(dim=(2, 3))

    torch.testing.assert_close(cls, pooled(head.rfcn_cls(feats), head.rfcn_cls_pool, 4))
    torch.testing.assert_close(box, pooled(head.rfcn_bbox(feats), head.rfcn_bbox_pool, 1)[:, 4:8].repeat(1, 4))


def test_ohem_keeps_the_hardest_rois():
    head = RFCNRoIHeads(8, 3, group_size=1, mid_channels=4, ohem_rois=2)
    logits = torch.tensor([[5.0, 0, 0], [0, 5, 0], [5, 0, 0], [0, 0, 5], [0, 0, 0]])
    labels = torch.tensor([0, 2, 0, 2, 1])  # easy bg, wrong fg, easy bg, right fg, unsure fg
    deltas = torch.zeros(5, 12)
    targets = torch.zeros(5, 4)
    targets[3] = 4.0  # a right class with a large box error
    keep = head._hard_examples(logits, deltas, labels, targets, num_images=1)
    assert sorted(keep.tolist()) == [1, 3]
    four = set(head._hard_examples(logits, deltas, labels, targets, num_images=2).tolist())  # k = 2 x 2
    assert four >= {1, 3, 4} and len(four & {0, 2}) == 1  # then one of the two equally easy bg RoIs


def test_ps_roi_vote_never_reads_the_last_row_and_column():
    """torchvision's kernel clips bins at H - 1 / W - 1 (the card's Limitations say so; the reference
    clips at H / W). If this starts failing, torchvision changed and the card must be updated."""
    maps = torch.ones(1, 4, 5, 5)
    rois = torch.tensor([[0, 0.0, 0, 5, 5]])
    before = ps_roi_vote(maps, rois, 1, 1.0)
    maps[..., -1, :] = 100.0
    maps[..., :, -1] = 100.0
    torch.testing.assert_close(ps_roi_vote(maps, rois, 1, 1.0), before)
