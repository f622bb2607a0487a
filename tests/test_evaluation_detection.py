"""zoo.evaluation.evaluate_detection: COCO box / mask AP with pycocotools on the real COCO subset
(../shared/realdata/coco128_subset): the ground truth fed back as detections scores AP 1, perturbed or
partial detections score in between, no detections 0; a random Mask R-CNN end to end (structure only)."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from zoo.data import CocoDetection, dataset_from_spec
from zoo.errors import InputError
from zoo.evaluation import COCO_STATS, coco_results, evaluate_detection, main
from zoo.tasks.object_detection import DetectionPostprocess, DetectionTransforms

pytest.importorskip("pycocotools", reason="COCO evaluation needs pycocotools (pip install pycocotools)")
# pycocotools' decode under NumPy 2 (its own code, not ours)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


class _OracleDetector(nn.Module):
    """Returns given detections (one dict per call, in dataset order) through the real detection presets."""

    def __init__(self, answers):
        super().__init__()
        self.answers, self.i = answers, 0
        object.__setattr__(self, "transforms", DetectionTransforms())
        object.__setattr__(self, "postprocess", DetectionPostprocess())

    def forward(self, images):
        assert isinstance(images, list) and images[0].dim() == 3
        out = self.answers[self.i]
        self.i += 1
        return [out]


@pytest.fixture(scope="module")
def coco(request):
    from conftest import REALDATA

    root = REALDATA / "coco128_subset"
    if not root.is_dir():
        pytest.skip(f"real sample data not found at {root} (set ZOO_REALDATA)")
    return CocoDetection(root, "instances_subset8.json")


@pytest.fixture(scope="module")
def ground_truth(coco):
    """Every image's annotations as detector output: boxes, score 1, category ids, mask probabilities."""
    from pycocotools.coco import COCO

    api = COCO(str(coco.annotation_file))
    answers = []
    for i in range(len(coco)):
        s = coco[i]
        anns = coco.annotations_of(s["image_id"])
        masks = torch.stack([torch.from_numpy(api.annToMask(a)).float() for a in anns])[:, None]
        answers.append({"boxes": s["boxes"], "scores": torch.ones(len(anns)), "labels": s["labels"], "masks": masks})
    return answers


def test_reader_real(coco):
    assert len(coco) == 8 and coco.image_ids == sorted(coco.image_ids)
    s = coco[0]
    assert s["image"].shape == (3, 640, 480) and s["image"].dtype == torch.float32
    assert s["boxes"].shape == (14, 4) and s["labels"].shape == (14,) and not bool(s["iscrowd"].any())
    assert bool((s["boxes"][:, 2:] >= s["boxes"][:, :2]).all())
    assert sum(len(coco.annotations_of(i)) for i in coco.image_ids) == 109
    assert len(dataset_from_spec(f"coco:{coco.root}@instances_subset8.json")) == 8


def test_ground_truth_scores_one(coco, ground_truth):
    res = evaluate_detection(_OracleDetector(ground_truth), coco)
    assert res["task"] == "instance-segmentation" and res["images"] == 8 and res["detections"] == 109
    for iou_type in ("bbox", "segm"):
        assert res[iou_type]["ap"] == 1.0 and res[iou_type]["ap50"] == 1.0 and res[iou_type]["ap75"] == 1.0
        assert list(res[iou_type]["stats"]) == list(COCO_STATS)
        assert res[iou_type]["stats"]["AR100"] == 1.0
    boxes_only = [{k: v for k, v in a.items() if k != "masks"} for a in ground_truth]
    res = evaluate_detection(_OracleDetector(boxes_only), coco, max_samples=3)
    assert res["task"] == "object-detection" and "segm" not in res and res["images"] == 3
    assert res["bbox"]["ap"] == 1.0 and res["detections"] == 14 + 13 + 13


def test_perturbed_and_partial_in_between(coco, ground_truth):
    shifted = []
    for a in ground_truth:
        wh = a["boxes"][:, 2:] - a["boxes"][:, :2]
        offset = torch.cat([wh[:, :1] * 0.2, torch.zeros_like(wh[:, :1])], 1).repeat(1, 2)
        shifted.append({**a, "boxes": a["boxes"] + offset, "masks": a["masks"].roll(4, dims=-1)})
    res = evaluate_detection(_OracleDetector(shifted), coco)
    for iou_type in ("bbox", "segm"):
        assert 0.0 < res[iou_type]["ap"] < 1.0 and res[iou_type]["ap"] < res[iou_type]["ap50"]
    # a box shifted by 20 % of its width has IoU 0.8 / 1.2 = 2/3: counted at IoU 0.5 and 0.55, 0.6, 0.65
    assert res["bbox"]["ap50"] == pytest.approx(1.0) and res["bbox"]["ap75"] == 0.0
    assert res["bbox"]["ap"] == pytest.approx(0.4, abs=1e-6)
    half = [{k: v[::2] for k, v in a.items()} for a in ground_truth]
    res = evaluate_detection(_OracleDetector(half), coco)
    for iou_type in ("bbox", "segm"):
        assert 0.0 < res[iou_type]["ap"] < 1.0 and res[iou_type]["stats"]["AR100"] < 1.0


def test_no_detections_score_zero(coco):
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64),
             "masks": torch.zeros(0, 1, 640, 480)}
    res = evaluate_detection(_OracleDetector([empty]), coco, max_samples=1)
    assert res["detections"] == 0 and res["bbox"]["ap"] == 0.0 and res["segm"]["ap"] == 0.0
    # area ranges without ground truth are NaN (COCOeval's -1)
    assert all(v == 0.0 or math.isnan(v) for v in res["bbox"]["stats"].values())


def test_coco_results_format():
    det = {"boxes": torch.tensor([[10.0, 20.0, 40.0, 30.0]]), "scores": torch.tensor([0.75]),
           "labels": torch.tensor([18]), "masks": torch.zeros(1, 1, 6, 5)}
    det["masks"][0, 0, 1:3, 2:4] = 0.9
    out = coco_results(7, det)
    assert out["bbox"] == [{"image_id": 7, "category_id": 18, "bbox": [10.0, 20.0, 30.0, 10.0], "score": 0.75}]
    rle = out["segm"][0]["segmentation"]
    assert rle["size"] == [6, 5] and isinstance(rle["counts"], str)
    from pycocotools import mask as mask_utils

    decoded = torch.from_numpy(mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}))
    assert int(decoded.sum()) == 4 and bool(decoded[1:3, 2:4].all())
    json.dumps(out)
    with pytest.raises(InputError):
        coco_results(7, {**det, "scores": torch.ones(2)})


def test_not_a_coco_dataset():
    from zoo.data import Shapes

    with pytest.raises(InputError, match="CocoDetection"):
        evaluate_detection(_OracleDetector([]), Shapes(length=1, size=(8, 8), textures="procedural"))


def test_random_mask_rcnn_end_to_end(coco, tmp_path):
    out = tmp_path / "coco.json"
    torch.manual_seed(0)
    res = main(["--data", f"coco:{coco.root}@instances_subset8.json", "--model", "mask-rcnn-r50-dcn",
                "--arch-override", "min_size=320", "--arch-override", "max_size=320",   # small for CPU tests
                "--arch-override", "box_score_thresh=0.0",   # keep the random model's 100 best per image
                "--max-samples", "2", "--per-pair", "--threads", "1", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["task"] == "instance-segmentation" and saved["images"] == 2 and saved["model"] == "mask-rcnn-r50-dcn"
    assert [r["id"] for r in saved["per_image"]] == ["241", "308"] and saved["detections"] == res["detections"]
    assert [r["detections"] for r in saved["per_image"]] == [100, 100]   # torchvision's detections_per_img
    for iou_type in ("bbox", "segm"):
        assert set(saved[iou_type]) == {"ap", "ap50", "ap75", "stats"}
        assert list(saved[iou_type]["stats"]) == list(COCO_STATS)
        assert all(v is None or 0.0 <= v <= 1.0 for v in saved[iou_type]["stats"].values())
