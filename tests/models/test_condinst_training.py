"""CondInst training (zoo.models.condinst, module docstring "Training"): each loss and the FCOS target
assignment on hand-worked values, the same against AdelaiDet's formulas restated as a loop oracle
(support.adelaidet_fcos) on built cases, the model's loss dict against the oracle end to end, instance
sampling, and a forward + backward that reaches every trainable parameter. Kept apart from
test_condinst.py (inference) so that each file stays under ~30 s."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss

from support import adelaidet_fcos as oracle
from zoo.errors import InputError
from zoo.models.condinst import (FPN_STRIDES, centerness_targets, condinst, dice_loss, fcos_ious, fcos_losses,
                                 fcos_targets)
from zoo.ops.dynamic_mask_head import aligned_bilinear, compute_locations, dynamic_mask_head_reference

ROOT = Path(__file__).resolve().parents[2]
#: condinst-small's recorded overfit recipe (its card quotes it; the data is ../shared/realdata's 8 COCO images)
OVERFIT_RECIPE = ("--model condinst-small --steps 200 --batch-size 8 --optimizer adamw --lr 1e-3 --weight-decay 1e-4 "
                  "--schedule poly --warmup 30 --max-grad-norm 10 --seed 0 --threads 1")
OVERFIT_DATA = "coco:{realdata}/coco128_subset@instances_subset8.json"
TINY = dict(depth=18, width=0.25, norm="bn", trainable_layers=5, fpn_channels=32, head_convs=1,
            mask_branch_channels=16, mask_branch_convs=1, num_classes=3, min_size=128, max_size=160)


def tiny_model(**kwargs):
    torch.manual_seed(0)
    return condinst(**{**TINY, **kwargs}).train()


def box_mask(h, w, *boxes):
    """(N, h, w) bool masks filling integer boxes x1, y1, x2, y2 (x2, y2 exclusive)."""
    masks = torch.zeros(len(boxes), h, w, dtype=torch.bool)
    for m, (x1, y1, x2, y2) in zip(masks, boxes):
        m[y1:y2, x1:x2] = True
    return masks


def built_batch():
    """Two images (different sizes, neither a multiple of 32) with objects of several sizes; labels are the
    model's label ids 1..3; one mask is off-centre in its box (an L shape), so centre of mass != box centre."""
    torch.manual_seed(1)
    images = [torch.rand(3, 120, 150), torch.rand(3, 100, 140)]
    m0 = box_mask(120, 150, (10, 12, 40, 36), (30, 20, 140, 115), (100, 5, 118, 21))
    m0[1, 60:115, 80:140] = False                                      # L shape inside its box
    m1 = box_mask(100, 140, (5, 50, 70, 98), (60, 10, 75, 30))
    targets = [{"boxes": torch.tensor([[10., 12, 40, 36], [30, 20, 140, 115], [100, 5, 118, 21]]),
                "labels": torch.tensor([2, 1, 3]), "masks": m0},
               {"boxes": torch.tensor([[5., 50, 70, 98], [60, 10, 75, 30]]), "labels": torch.tensor([3, 3]),
                "masks": m1}]
    return images, targets


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
    mask = box_mask(32, 32, (0, 0, 8, 8))
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


def test_model_losses_match_the_oracle_end_to_end():
    """The loss dict of a tiny CondInst (train mode, no instance sampling) on a built two-image batch =
    the oracle's FCOS losses on the same head outputs, and the dice loss of every positive recomputed from
    the reference dynamic head on [relative coordinates, mask features], aligned-upsampled x2, against the
    ground-truth mask at [2::4, 2::4] of the padded input."""
    model = tiny_model(max_proposals=-1)
    images, targets = built_batch()
    with torch.no_grad():
        losses = model(images, targets)
        image_list, resized = model.transform(images, [{**t, "masks": t["masks"].to(torch.uint8)} for t in targets])
        feats = list(model.backbone(image_list.tensors).values())
        logits, dist, ctr, params = model.head(feats)
        mask_feats = model.mask_branch(feats[:3])
    hp, wp = image_list.tensors.shape[-2:]
    locations = [compute_locations(x.shape[-2], x.shape[-1], s).tolist() for x, s in zip(logits, FPN_STRIDES)]
    levels = [lvl for lvl, loc in enumerate(locations) for _ in loc]
    flat_loc = [xy for loc in locations for xy in loc]
    rows = {k: [] for k in ("logits", "reg", "ctr", "labels", "reg_t")}
    positives = []                                                    # (image, location index, mask)
    for i, t in enumerate(resized):
        masks = F.pad(t["masks"], (0, wp - t["masks"].shape[-1], 0, hp - t["masks"].shape[-2]))
        assigned = oracle.assign(locations, FPN_STRIDES, t["boxes"].tolist(), (t["labels"] - 1).tolist(),
                                 3, [64, 128, 256, 512], 1.5, [oracle.mask_centre(m) for m in masks])
        per_loc = lambda maps: torch.cat([x[i].flatten(1) for x in maps], 1).T.tolist()  # noqa: E731
        rows["logits"] += per_loc(logits)
        rows["reg"] += per_loc(dist)
        rows["ctr"] += [v[0] for v in per_loc(ctr)]
        for p, (label, reg_t, g) in enumerate(assigned):
            rows["labels"].append(label)
            rows["reg_t"].append(reg_t or (1.0, 1.0, 1.0, 1.0))
            if g >= 0:
                positives.append((i, p, masks[g]))
    expected = oracle.fcos_losses(rows["logits"], rows["reg"], rows["ctr"], rows["labels"], rows["reg_t"])
    for key, value in expected.items():
        assert losses[key].item() == pytest.approx(value, rel=1e-4), key
    flat_params = torch.cat([x.flatten(2) for x in params], 2).permute(0, 2, 1)
    hf, wf = mask_feats.shape[-2:]
    py, px = torch.meshgrid(torch.arange(hf) * 8.0 + 4, torch.arange(wf) * 8.0 + 4, indexing="ij")
    dices = []
    for i, p, gt_mask in positives:
        (x, y), soi = flat_loc[p], (64, 128, 256, 512, 1024)[levels[p]]
        inputs = torch.cat([torch.stack([(x - px) / soi, (y - py) / soi]), mask_feats[i]])[None]
        logit = dynamic_mask_head_reference(inputs, flat_params[i, p:p + 1], 8, [80, 64, 8], [8, 8, 1])
        prob = aligned_bilinear(logit, 2).sigmoid()[0, 0]
        dices.append(oracle.dice(prob.flatten().tolist(), gt_mask[2::4, 2::4].float().flatten().tolist()))
    assert len(positives) > 20 and {p[0] for p in positives} == {0, 1}
    assert losses["loss_mask"].item() == pytest.approx(sum(dices) / len(dices), rel=1e-4)


# ---------------------------------------------------------------------------------- 3. sampling, gradients, errors
def test_max_proposals_keeps_a_random_subset():
    model = tiny_model(max_proposals=5)
    pos, gts = torch.arange(10, 30), torch.arange(20) % 4
    torch.manual_seed(0)
    kept = model._sample_positives(pos, gts, torch.zeros(20, 3), torch.zeros(20), 1, 100)
    assert len(kept) == 5 and len(set(kept.tolist())) == 5 and set(kept.tolist()) <= set(pos.tolist())
    few = model._sample_positives(pos[:4], gts[:4], torch.zeros(4, 3), torch.zeros(4), 1, 100)
    assert few.tolist() == [10, 11, 12, 13]


def test_topk_proposals_per_image_and_ground_truth():
    """k = 4: image 0 has 2 ground truths -> the best int(4 / 2) = 2 of each by max class prob x centre-ness;
    image 1 has 3 -> int(4 / 3) = 1 of each (gt 4 has a single positive, kept)."""
    model = tiny_model(max_proposals=-1, topk_proposals_per_im=4)
    per_image = 100
    pos = torch.tensor([1, 2, 3, 4, 5, 101, 102, 103, 104, 105])
    gts = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3, 3, 4])
    cls = torch.full((10, 3), -9.0)
    cls[:, 1] = torch.tensor([0.1, 2.0, 1.0, -1.0, 0.5, 0.0, 3.0, 1.0, -2.0, 0.0])
    kept = model._sample_positives(pos, gts, cls, torch.zeros(10), 2, per_image)
    assert sorted(kept.tolist()) == [2, 3, 4, 5, 102, 103, 105]
    with pytest.raises(ValueError, match="cannot both be set"):
        condinst(**{**TINY, "topk_proposals_per_im": 4})                  # max_proposals defaults to 500


def test_forward_backward_reaches_every_trainable_parameter():
    """Finite losses; every trainable parameter gets a finite gradient, non-zero except the box scales of
    P5-P7 (a 128 x 160 input has no object with max(l, t, r, b) > 128, so those levels have no positive)."""
    model = tiny_model()
    images, targets = built_batch()
    losses = model(images, targets)
    assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr", "loss_mask"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    idle = {"head.scales.2.scale", "head.scales.3.scale", "head.scales.4.scale"}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert (p.grad.abs().sum() > 0) != (name in idle), name


def test_images_without_objects_still_train():
    model = tiny_model()
    images = [torch.rand(3, 96, 128)] * 2
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
             "masks": torch.zeros(0, 96, 128, dtype=torch.bool)}
    losses = model(images, [empty, empty])
    assert losses["loss_fcos_cls"] > 0 and losses["loss_mask"] == 0 and losses["loss_fcos_loc"] == 0
    sum(losses.values()).backward()
    assert model.head.controller.weight.grad is not None and model.mask_branch.tower[-1].weight.grad is not None


def test_training_inputs_are_checked():
    model = tiny_model()
    images, targets = built_batch()
    with pytest.raises(InputError, match="takes targets"):
        model(images)
    with pytest.raises(InputError, match="lacks \\['masks'\\]"):
        model(images, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
    with pytest.raises(InputError, match="\\[7\\], not among the model's label ids"):
        model(images[:1], [{**targets[0], "labels": torch.tensor([1, 7, 2])}])
    with pytest.raises(InputError, match="masks"):
        model(images[:1], [{**targets[0], "masks": targets[0]["masks"][:, :50]}])
    with pytest.raises(InputError, match="got 1 targets for 2 images"):
        model(images, targets[:1])
    model.eval()
    with pytest.raises(InputError, match="only in training mode"):
        model(images, targets)


def _ranks_normaliser(rank: int, world: int, port: int, out) -> None:
    import torch.distributed as dist

    from zoo.models.condinst import _mean_over_processes

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


# ------------------------------------------------------------------------------------------- 4. overfit check (slow)
@pytest.mark.slow
def test_condinst_small_overfits_eight_coco_images(realdata, tmp_path):
    """Overfit check, train = test (not a measure of generalisation): condinst-small from random
    initialisation, trained by scripts/train.py with the recipe its card records on the 8 images of
    coco128_subset (109 instances, 21 categories), reaches mask AP >= 0.5 on those same 8 images with zoo's
    COCO evaluator (scripts/evaluate.py). Takes about half an hour on one busy CPU core."""
    from zoo.evaluation import main as evaluate_main
    from zoo.training import main as train_main

    card = (ROOT / "model_cards" / "condinst-small.md").read_text(encoding="utf-8")
    recorded = OVERFIT_DATA.format(realdata="../shared/realdata")
    assert f"python scripts/train.py {OVERFIT_RECIPE} --data {recorded} --out" in card
    data = OVERFIT_DATA.format(realdata=realdata)
    train_main([*OVERFIT_RECIPE.split(), "--data", data, "--out", str(tmp_path / "run"), "--no-progress"])
    result = evaluate_main(["--model", "condinst-small", "--checkpoint", str(tmp_path / "run" / "model.safetensors"),
                            "--data", data, "--threads", "1"])
    assert result["images"] == 8 and result["segm"]["ap"] >= 0.5, result["segm"]
