"""The FCOS training pieces (zoo.layers.fcos): each loss and the target assignment on hand-worked values,
the same against AdelaiDet's formulas restated as a loop oracle (support.adelaidet_fcos) on built cases, and
the normalisers averaged over processes. The model's loss dict end to end: tests/models/test_condinst_training.py."""
from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import generalized_box_iou_loss

from support import adelaidet_fcos as oracle
from zoo.layers.fcos import centerness_targets, dice_loss, fcos_ious, fcos_losses, fcos_targets
from zoo.ops.dynamic_mask_head import compute_locations

FPN_STRIDES = (8, 16, 32, 64, 128)  # P3-P7


# ------------------------------------------------------------------------------------------- 1. hand-worked values
def test_focal_loss_hand_worked():
    """At logit 0 (p = 1/2): positive alpha (1 - p)^2 ln 2 = 0.25 x 0.25 x ln 2; negative 0.75 x 0.25 x ln 2;
    one location of two classes, positive in class 0, is the only positive: loss = their sum / 1."""
    logits = torch.zeros(1, 2)
    out = fcos_losses(logits, torch.ones(1, 4), torch.zeros(1), torch.tensor([0]), torch.ones(1, 4))
    assert out["loss_fcos_cls"].item() == pytest.approx((0.0625 + 0.1875) * math.log(2), rel=1e-6)
    assert oracle.focal(0.0, 1.0) == pytest.approx(0.0625 * math.log(2))


def test_giou_hand_worked():
    """(l, t, r, b) from one location. Same box: IoU = GIoU = 1. pred (2, 1, 0, 1) vs target (1, 1, 1, 1):
    areas 4 and 4, intersection (1 + 0) x 2 = 2, union 6, enclosing 3 x 2 = 6: IoU = (2 + 1) / (6 + 1) = 3/7
    = GIoU. Boxes meeting at the location's corner, pred (0, 0, 2, 2) vs (2, 2, 0, 0): intersection 0,
    union 8, enclosing 16: IoU = 1/9, GIoU = 1/9 - 8/16 = -7/18."""
    pred = torch.tensor([[1., 1, 1, 1], [2, 1, 0, 1], [0, 0, 2, 2]])
    target = torch.tensor([[1., 1, 1, 1], [1, 1, 1, 1], [2, 2, 0, 0]])
    iou, giou = fcos_ious(pred, target)
    torch.testing.assert_close(iou, torch.tensor([1, 3 / 7, 1 / 9]))
    torch.testing.assert_close(giou, torch.tensor([1, 3 / 7, -7 / 18]))


def test_giou_is_torchvisions_up_to_the_plus_one_smoothing():
    """On large boxes (the +1 negligible) 1 - GIoU equals torchvision's generalized_box_iou_loss of the
    same boxes in x1y1x2y2 around the location; on boxes of a stride or two they differ (why zoo writes it)."""
    torch.manual_seed(0)
    pred, target = torch.rand(50, 4, dtype=torch.float64) * 1e4 + 1, torch.rand(50, 4, dtype=torch.float64) * 1e4 + 1
    as_boxes = lambda d: torch.stack([-d[:, 0], -d[:, 1], d[:, 2], d[:, 3]], 1)  # noqa: E731
    tv = generalized_box_iou_loss(as_boxes(pred), as_boxes(target))
    torch.testing.assert_close(1 - fcos_ious(pred, target)[1], tv, rtol=0, atol=1e-6)
    small = torch.tensor([[1.0, 1, 1, 1]]), torch.tensor([[0.5, 0.5, 1, 1]])
    assert abs(float(1 - fcos_ious(*small)[1]) - float(generalized_box_iou_loss(*map(as_boxes, small)))) > 0.05


def test_centerness_and_dice_hand_worked():
    """Centre-ness of (1, 3, 2, 2): sqrt(1/2 x 2/3) = sqrt(1/3). Dice of p = (1, 0, .5, .5), g = (1, 0, 1, 0):
    sum pg = 1.5, sum p^2 = 1.5, sum g^2 = 2: 1 - 3 / (3.5 + 1e-5)."""
    torch.testing.assert_close(centerness_targets(torch.tensor([[1., 3, 2, 2], [2, 2, 2, 2]])),
                               torch.tensor([math.sqrt(1 / 3), 1.0]))
    p, g = torch.tensor([[1., 0, .5, .5]]), torch.tensor([[1., 0, 1, 0]])
    torch.testing.assert_close(dice_loss(p, g), torch.tensor([1 - 3 / 3.50001]))
    assert oracle.dice([1, 0, .5, .5], [1, 0, 1, 0]) == pytest.approx(1 - 3 / 3.50001)


def _grid(size, strides):
    return [compute_locations(size // s, size // s, s) for s in strides]


def test_target_assignment_hand_worked():
    """A 32 x 32 input, levels of stride 8 (4 x 4 locations at 4, 12, 20, 28) and 16 (8, 24), sizes of
    interest (16,): ranges [-1, 16] and [16, 1e8]. Boxes A = (0, 0, 16, 16), B = (2, 2, 30, 30),
    C = (0, 0, 24, 24), centre regions +-12 (stride 8) / +-24 (stride 16) around the box centre, clipped.
    Stride 8: A's region (0, 0, 16, 16) holds (4|12, 4|12), max(ltrb) 12 <= 16; B's (4, 4, 28, 28) holds
    (12|20, 12|20) but their max(ltrb) >= 18 > 16; C's region holds 9 locations, only (12, 12) has max 12
    in range, and there A (area 256) beats C (576). Stride 16: A's max 8 < 16 is out of range; B holds all
    four (max 22); C holds (8, 8) with max(ltrb) exactly 16 (ranges are inclusive) and beats B (784)."""
    boxes = torch.tensor([[0., 0, 16, 16], [2, 2, 30, 30], [0, 0, 24, 24]])
    labels, reg, gt = fcos_targets(_grid(32, (8, 16)), (8, 16), boxes, torch.tensor([0, 1, 2]), num_classes=3,
                                   sizes_of_interest=(16,))
    level0 = torch.full((4, 4), -1)
    level0[:2, :2] = 0                                            # rows y = 4, 12; columns x = 4, 12
    assert gt[:16].view(4, 4).tolist() == level0.tolist()
    assert gt[16:].tolist() == [2, 1, 1, 1]
    assert labels.tolist() == [0 if g == 0 else (3 if g == -1 else g) for g in gt.tolist()]
    torch.testing.assert_close(reg[0], torch.tensor([4., 4, 12, 12]) / 8)        # A from (4, 4)
    torch.testing.assert_close(reg[16], torch.tensor([8., 8, 16, 16]) / 16)      # C from (8, 8)
    torch.testing.assert_close(reg[19], torch.tensor([22., 22, 6, 6]) / 16)      # B from (24, 24)
    assert reg[gt == -1].abs().sum() == 0


def test_target_assignment_mask_centre_ties_and_options():
    """Mask centre: D = (0, 0, 32, 32) whose mask fills pixels 0..7 x 0..7 has its centre of mass at
    (3.5, 3.5), region (0, 0, 15.5, 15.5) at stride 8: locations (4|12, 4|12); around the box centre
    (16, 16) the region (4, 4, 28, 28) holds (12|20, 12|20). Equal boxes: the first wins. No ground truth:
    all background. Without centre sampling every location inside a box is a candidate."""
    grid, box = _grid(32, (8,)), torch.tensor([[0., 0, 32, 32]])
    mask = torch.zeros(1, 32, 32, dtype=torch.bool)
    mask[0, :8, :8] = True                                            # pixels 0..7 x 0..7
    by_mask = fcos_targets(grid, (8,), box, torch.tensor([0]), num_classes=1, sizes_of_interest=(), masks=mask)[2]
    by_box = fcos_targets(grid, (8,), box, torch.tensor([0]), num_classes=1, sizes_of_interest=())[2]
    expect = torch.full((4, 4), -1)
    expect[:2, :2] = 0
    assert by_mask.view(4, 4).tolist() == expect.tolist()
    assert by_box.view(4, 4).tolist() == expect.roll((1, 1), (0, 1)).tolist()
    twins = fcos_targets(grid, (8,), box.repeat(2, 1), torch.tensor([0, 1]), num_classes=2, sizes_of_interest=())
    assert set(twins[2].tolist()) == {-1, 0} and set(twins[0].tolist()) == {0, 2}
    empty = fcos_targets(grid, (8,), torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), num_classes=2)
    assert empty[0].tolist() == [2] * 16 and empty[2].tolist() == [-1] * 16 and empty[1].abs().sum() == 0
    plain = fcos_targets(grid, (8,), torch.tensor([[2., 2, 22, 14]]), torch.tensor([0]), num_classes=1,
                         sizes_of_interest=(), center_sample=False)[2]
    assert plain.view(4, 4)[:2, :3].tolist() == [[0] * 3] * 2 and int((plain == 0).sum()) == 6


# ---------------------------------------------------------------------------------- 2. against AdelaiDet's formulas
def test_targets_match_adelaidet_on_a_built_case():
    """A 256 x 320 input on P3-P7 with AdelaiDet's sizes of interest and radius: 12 random boxes with
    random masks inside them (centre of mass off the box centre), some nested, some of equal area."""
    torch.manual_seed(3)
    h, w = 256, 320
    locations = [compute_locations(math.ceil(h / s), math.ceil(w / s), s) for s in FPN_STRIDES]
    xy = torch.rand(12, 2) * torch.tensor([w - 20, h - 20])
    wh = torch.rand(12, 2) * 300 + 4
    boxes = torch.cat([xy, (xy + wh).minimum(torch.tensor([w, h]))], 1).round()
    boxes[5] = boxes[4] + torch.tensor([3., 3, 3, 3])            # equal area, shifted
    masks = torch.zeros(12, h, w, dtype=torch.bool)
    for m, (x1, y1, x2, y2) in zip(masks, boxes.int().tolist()):
        m[y1:y2, x1:x2] = torch.rand(y2 - y1, x2 - x1) < torch.linspace(0.1, 0.9, x2 - x1)
    classes = torch.randint(0, 5, (12,))
    labels, reg, gt = fcos_targets(locations, FPN_STRIDES, boxes, classes, num_classes=5, masks=masks)
    expected = oracle.assign([loc.tolist() for loc in locations], FPN_STRIDES, boxes.tolist(), classes.tolist(), 5,
                             [64, 128, 256, 512], 1.5, [oracle.mask_centre(m) for m in masks])
    assert labels.tolist() == [e[0] for e in expected]
    assert gt.tolist() == [e[2] for e in expected]
    positive = [i for i, e in enumerate(expected) if e[2] >= 0]
    assert 30 < len(positive) and len({expected[i][2] for i in positive}) >= 8
    torch.testing.assert_close(reg[positive], torch.tensor([expected[i][1] for i in positive]))


def test_losses_match_adelaidet_on_a_built_case():
    torch.manual_seed(4)
    m, c = 120, 4
    labels = torch.randint(0, c + 1, (m,))
    reg_targets = torch.rand(m, 4, dtype=torch.float64) * 6 + 0.1
    logits, ctr = torch.randn(m, c, dtype=torch.float64) * 2, torch.randn(m, dtype=torch.float64)
    reg_pred = torch.rand(m, 4, dtype=torch.float64) * 6
    out = fcos_losses(logits, reg_pred, ctr, labels, reg_targets)
    expected = oracle.fcos_losses(logits.tolist(), reg_pred.tolist(), ctr.tolist(), labels.tolist(),
                                  reg_targets.tolist())
    for key, value in expected.items():
        assert out[key].item() == pytest.approx(value, rel=1e-9), key
    p, g = torch.rand(7, 5, 6, dtype=torch.float64), torch.rand(7, 5, 6) < 0.4
    expected_dice = [oracle.dice(a.flatten().tolist(), b.flatten().float().tolist()) for a, b in zip(p, g)]
    torch.testing.assert_close(dice_loss(p, g), torch.tensor(expected_dice, dtype=torch.float64))


def test_no_positive_normalises_by_one():
    """All background: the focal loss is divided by 1, the box and centre-ness losses are 0."""
    logits = torch.full((3, 2), -1.0, requires_grad=True)
    out = fcos_losses(logits, torch.ones(3, 4), torch.zeros(3), torch.tensor([2, 2, 2]), torch.ones(3, 4))
    assert out["loss_fcos_cls"].item() == pytest.approx(6 * oracle.focal(-1.0, 0.0))
    assert out["loss_fcos_loc"].item() == 0 and out["loss_fcos_ctr"].item() == 0


# ---------------------------------------------------------------------------------- 3. across processes
def _ranks_normaliser(rank: int, world: int, port: int, out) -> None:
    import torch.distributed as dist

    from zoo.layers.fcos import _mean_over_processes

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        out[rank] = _mean_over_processes(torch.tensor(3 + 2 * rank))
    finally:
        dist.destroy_process_group()


def test_normalisers_are_averaged_over_processes():
    """AdelaiDet's reduce_mean: ranks counting 3 and 5 positives both divide by 4."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.start_processes(_ranks_normaliser, args=(2, port, out), nprocs=2, start_method="fork")
    assert dict(out) == {0: 4.0, 1: 4.0}
