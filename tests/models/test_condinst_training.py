"""CondInst training (zoo.models.condinst, module docstring "Training"): the model's loss dict against
AdelaiDet's formulas restated as a loop oracle (support.adelaidet_fcos) end to end, instance sampling, and a
forward + backward that reaches every trainable parameter. Each FCOS loss and the target assignment alone:
tests/layers/test_fcos.py. Kept apart from test_condinst.py (inference) so that each file stays under ~30 s."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from support import adelaidet_fcos as oracle
from zoo.errors import InputError
from zoo.models.condinst import FPN_STRIDES, condinst
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


# ---------------------------------------------------------------------------------- 1. against AdelaiDet's formulas
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


# ---------------------------------------------------------------------------------- 2. sampling, gradients, errors
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


# ------------------------------------------------------------------------------------------- 3. overfit check (slow)
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
