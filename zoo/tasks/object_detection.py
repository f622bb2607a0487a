"""Object detection: the ``detection`` presets (torchvision-style detectors: Faster / Mask R-CNN, R-FCN,
CondInst), COCO box AP evaluation and ``zoo predict``'s boxes. Instance segmentation
(:mod:`zoo.tasks.instance_segmentation`) is the same task with masks: it shares all of this.

Design (torchvision's): the detector owns its geometric pre-processing. torchvision's
``GeneralizedRCNNTransform`` inside the model normalises with the ImageNet mean/std, resizes the shorter
side to ``min_size`` (800) with the longer side capped at ``max_size`` (1333), pads the batch to a
multiple of 32, and maps the detections back to the size of each image it was given. So the zoo
transforms only convert dtype and range and split the batch into the list of 3 x H x W images the model
takes; they never resize or normalise (doing it twice would change the result). Boxes and masks come
out of the model already at each input image's size; the postprocess filters by score and binarises the
mask probabilities.

Evaluation (:func:`evaluate_detection`, needs ``pycocotools``): the detections (postprocess with its
score threshold, 0 by default; boxes x1y1x2y2 in input pixels, labels = COCO category ids) become COCO
results as torchvision's references write them: boxes xywh, masks binarised at 0.5 (the postprocess's
``mask_threshold``) and run-length encoded with ``pycocotools.mask.encode``. ``COCOeval`` over the
evaluated images gives ``bbox`` (and ``segm`` when the model outputs masks) each with ``ap``
(AP@[.5:.95]), ``ap50``, ``ap75`` and ``stats``, the 12 numbers of ``COCOeval.summarize()`` by name; -1
(no ground truth in that area range) becomes NaN (null in JSON). Under ``torch.distributed`` the
detections of every rank are gathered and ``COCOeval`` runs on every rank.
"""
from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from zoo.errors import InputError
from zoo.tasks.base import Predict, Task, run_samples
from zoo.tasks.preprocess import check_input_args, to_float_batch

__all__ = ["OBJECT_DETECTION", "DetectionPostprocess", "DetectionTransforms", "COCO_STATS", "coco_results",
           "evaluate_detection", "detection_inputs"]

MASKS_TASK = "instance-segmentation"  # the task of detectors that also output masks (zoo.tasks.instance_segmentation)


# ------------------------------------------------------------------------------------ presets
class DetectionTransforms(nn.Module):
    """Images -> the list of float 3 x H x W images in [0, 1] a torchvision detector takes.

    Input: a B x 3 x H x W (or 3 x H x W) tensor, uint8 in [0, 255] or float in [0, 1], RGB; or a list
    of 3 x H_i x W_i images of different sizes. Resizing and normalisation happen inside the model.
    Images below ``min_size`` pixels high or wide are refused (the entry's ``min_input_size``).
    """

    def __init__(self, min_size: int | None = None) -> None:
        super().__init__()
        check_input_args(1.0, min_size)
        self.min_size = min_size

    def forward(self, images: Tensor | Sequence[Tensor]) -> list[Tensor]:
        if isinstance(images, Tensor):
            return list(to_float_batch(images, min_size=self.min_size).unbind(0))
        if not isinstance(images, (list, tuple)) or not images:
            raise InputError("detection transforms take a B x 3 x H x W tensor or a non-empty list of 3 x H x W images")
        out = []
        for i, image in enumerate(images):
            if not isinstance(image, Tensor) or image.dim() != 3:
                raise InputError(f"images[{i}] must be a 3 x H x W tensor, got {getattr(image, 'shape', type(image))}")
            out.append(to_float_batch(image, f"images[{i}]", min_size=self.min_size)[0])
        return out


class DetectionPostprocess(nn.Module):
    """Detector output (list of dicts) -> per image ``{"boxes" (K, 4) x1y1x2y2 float, "scores" (K,),
    "labels" (K,) int64}`` (+ ``"masks"`` (K, H, W) bool) with ``scores >= score_threshold``.

    ``masks`` (torchvision's (K, 1, H, W) probabilities) are binarised at ``mask_threshold`` (0.5, as
    torchvision's references and mmdet). ``size`` is the input size (H, W) or one size per image; the
    detections are already at that size (see the module docstring), so it is only checked against the
    masks' size. Filtering uses a boolean mask (a data-dependent size, as every detector output).
    """

    def __init__(self, score_threshold: float = 0.0, mask_threshold: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= mask_threshold <= 1.0:
            raise ValueError(f"mask_threshold must be in [0, 1], got {mask_threshold}")
        self.score_threshold, self.mask_threshold = float(score_threshold), float(mask_threshold)

    def forward(self, output: Sequence[Mapping[str, Tensor]],
                size: Sequence[int] | Sequence[Sequence[int]] | None = None) -> list[dict[str, Tensor]]:
        if not isinstance(output, (list, tuple)) or not all(isinstance(o, Mapping) for o in output):
            raise InputError("detection postprocess takes the detector's eval output: a list of dicts with "
                             "'boxes', 'scores', 'labels' (call the model in eval mode)")
        sizes: list[Any] = [None] * len(output)
        if size is not None:
            if len(size) and isinstance(size[0], (list, tuple, torch.Size)):
                if len(size) != len(output):
                    raise InputError(f"got {len(size)} sizes for {len(output)} images")
                sizes = [tuple(int(v) for v in s[-2:]) for s in size]
            else:
                sizes = [tuple(int(v) for v in size[-2:])] * len(output)
        results = []
        for i, (det, hw) in enumerate(zip(output, sizes)):
            missing = {"boxes", "scores", "labels"} - set(det)
            if missing:
                raise InputError(f"output[{i}] lacks {sorted(missing)}")
            keep = det["scores"] >= self.score_threshold
            res = {"boxes": det["boxes"][keep], "scores": det["scores"][keep], "labels": det["labels"][keep]}
            if "masks" in det:
                masks = det["masks"]
                if hw is not None and tuple(masks.shape[-2:]) != hw:
                    raise InputError(f"output[{i}] masks are {tuple(masks.shape[-2:])}, not the input size {hw}; "
                                     "pass the size of the images given to the model")
                res["masks"] = masks[keep].flatten(0, masks.dim() - 3) > self.mask_threshold
            results.append(res)
        return results


# ------------------------------------------------------------------------------------ COCO evaluation
COCO_STATS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
              "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


def _pycocotools():
    try:
        from pycocotools import mask as mask_utils
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("COCO evaluation needs pycocotools: pip install pycocotools") from e
    return COCO, COCOeval, mask_utils


def coco_results(image_id: int, detection: Mapping[str, torch.Tensor]) -> dict[str, list[dict]]:
    """One image's detections -> COCO result dicts ``{"bbox": [...], "segm": [...]}`` (``segm`` empty
    without masks).

    ``detection``: ``boxes`` (K, 4) x1y1x2y2 pixels, ``scores`` (K,), ``labels`` (K,) COCO category ids,
    optional ``masks`` (K, H, W) or (K, 1, H, W), bool or probabilities (binarised at > 0.5). Boxes
    become ``[x, y, w, h]``; masks are RLE-encoded with ``pycocotools.mask.encode`` (counts as str).
    """
    boxes = detection["boxes"].detach().double().cpu().view(-1, 4)
    scores = detection["scores"].detach().double().cpu().view(-1).tolist()
    labels = detection["labels"].detach().cpu().view(-1).tolist()
    if not len(scores) == len(labels) == boxes.shape[0]:
        raise InputError(f"detection of image {image_id}: {boxes.shape[0]} boxes, {len(scores)} scores and "
                         f"{len(labels)} labels must match")
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()
    out: dict[str, list[dict]] = {
        "bbox": [{"image_id": int(image_id), "category_id": int(c), "bbox": b, "score": float(sc)}
                 for b, sc, c in zip(xywh, scores, labels)],
        "segm": []}
    masks = detection.get("masks")
    if masks is not None:
        import numpy as np

        _, _, mask_utils = _pycocotools()
        masks = masks.detach().cpu()
        if masks.dim() == 4:
            masks = masks.flatten(0, 1) if masks.shape[1] == 1 else masks
        if masks.dim() != 3 or masks.shape[0] != len(scores):
            raise InputError(f"detection of image {image_id}: masks must be (K, H, W) or (K, 1, H, W) with K = "
                             f"{len(scores)}, got {tuple(detection['masks'].shape)}")
        binary = masks if masks.dtype == torch.bool else masks > 0.5
        if len(scores):
            rles = mask_utils.encode(np.asfortranarray(binary.permute(1, 2, 0).numpy().astype(np.uint8)))
            for rle, sc, c in zip(rles, scores, labels):
                rle["counts"] = rle["counts"].decode("ascii")
                out["segm"].append({"image_id": int(image_id), "category_id": int(c), "segmentation": rle,
                                    "score": float(sc)})
    return out


def _coco_eval(gt: Any, results: list[dict], iou_type: str, image_ids: list[int]) -> dict[str, Any]:
    COCO, COCOeval, _ = _pycocotools()
    with contextlib.redirect_stdout(io.StringIO()):
        if results:
            dt = gt.loadRes(results)
        else:  # loadRes cannot take an empty list; no detections scores 0 wherever there is ground truth
            dt = COCO()
            dt.dataset = {"images": list(gt.dataset["images"]), "categories": list(gt.dataset["categories"]),
                          "annotations": []}
            dt.createIndex()
        ev = COCOeval(gt, dt, iou_type)
        ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = {name: (math.nan if float(v) < 0 else float(v)) for name, v in zip(COCO_STATS, ev.stats)}
    return {"ap": stats["AP"], "ap50": stats["AP50"], "ap75": stats["AP75"], "stats": stats}


@torch.no_grad()
def evaluate_detection(model: nn.Module, dataset: Dataset, *, transforms: nn.Module | None = None,
                       postprocess: nn.Module | None = None, device: str | torch.device = "cpu",
                       max_samples: int | None = None, iou_types: Sequence[str] | None = None) -> dict[str, Any]:
    """COCO box AP (and mask AP for models that output masks) of a detector on a COCO dataset.

    ``dataset``: :class:`zoo.data.CocoDetection` (or anything with ``annotation_file``, ``image_ids``
    and samples with ``image`` (3, H, W) float in [0, 1] and ``image_id``). ``iou_types``: default
    ``("bbox", "segm")`` when the detections carry masks, else ``("bbox",)``. Needs pycocotools.
    """
    COCO, _, _ = _pycocotools()
    for attr in ("annotation_file", "image_ids"):
        if not hasattr(dataset, attr):
            raise InputError(f"detection evaluation needs a COCO dataset (zoo.data.CocoDetection, spec "
                             f"coco:PATH[@annotations.json]); {type(dataset).__name__} has no {attr!r}")
    transforms = transforms if transforms is not None else model.transforms
    postprocess = postprocess if postprocess is not None else model.postprocess

    def score(s: Mapping[str, Any]) -> dict[str, Any]:
        image = s["image"].unsqueeze(0).to(device)
        det = postprocess(model(transforms(image)), image.shape[-2:])[0]
        res = coco_results(int(s["image_id"]), det)
        return {"detections": len(res["bbox"]), "has_masks": "masks" in det, **res}

    rows = run_samples(model, dataset, max_samples, ("image", "image_id"), "detection evaluation", score)
    has_masks = any(r["has_masks"] for r in rows)
    types = tuple(iou_types) if iou_types is not None else (("bbox", "segm") if has_masks else ("bbox",))
    if "segm" in types and not has_masks:
        raise InputError("mask AP (iou type 'segm') needs a model that outputs masks (Mask R-CNN)")
    n = len(dataset) if max_samples is None else min(len(dataset), max_samples)
    image_ids = [int(dataset.image_ids[i]) for i in range(n)]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(dataset.annotation_file))
    out: dict[str, Any] = {"task": MASKS_TASK if has_masks else OBJECT_DETECTION.name, "images": n,
                           "annotation_file": str(dataset.annotation_file),
                           "detections": sum(r["detections"] for r in rows)}
    for iou_type in types:
        out[iou_type] = _coco_eval(gt, [d for r in rows for d in r[iou_type]], iou_type, image_ids)
    out["per_image"] = [{"index": r["index"], "id": r["id"], "detections": r["detections"]} for r in rows]
    return out


# ------------------------------------------------------------------------------------ inputs and zoo predict
def detection_inputs(make: Any, batch: int, lead: Sequence[int], height: int, width: int) -> tuple[Any, ...]:
    """One list of ``batch`` ``(*lead, height, width)`` images (torchvision's detection API)."""
    return ([make(*lead, height, width) for _ in range(batch)],)


def draw_detections(model: nn.Module, images: list[Tensor], options: Any) -> tuple[Tensor, dict[str, Any]]:
    """The image with the boxes (and masks) scoring at least ``options.score_threshold`` drawn on it."""
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    batch = images[0].unsqueeze(0)
    det = model.postprocess(model(model.transforms(batch)), batch.shape[-2:])[0]
    keep = det["scores"] >= options.score_threshold
    picture = batch[0].cpu()
    if "masks" in det and keep.any():
        picture = draw_segmentation_masks(picture, det["masks"][keep].cpu().bool().reshape(-1, *picture.shape[-2:]), alpha=0.5)
    if keep.any():
        labels = [f"{int(c)}: {float(s):.2f}" for c, s in zip(det["labels"][keep], det["scores"][keep])]
        picture = draw_bounding_boxes(picture, det["boxes"][keep].cpu(), labels=labels, width=2)
    return picture, {"detections": int(keep.sum()), "labels": det["labels"][keep].tolist()}


OBJECT_DETECTION = Task(
    name="object-detection",
    headline_metrics=("mAP", "AP", "box AP", "box_ap", "map"),
    detector=True,
    pipeline_tag="object-detection",
    usage=(
        "images = read_image(\"image.jpg\").unsqueeze(0)   # uint8, B x 3 x H x W\n"
        "dets = model.postprocess(model(model.transforms(images)), images.shape[-2:])\n"
        "# per image: boxes, scores, labels (model.categories[label] names them)[, masks] at the input size"
    ),
    transforms={"detection": DetectionTransforms},
    postprocess={"detection": DetectionPostprocess},
    example_inputs=detection_inputs,
    evaluator=evaluate_detection,
    metrics=("bbox", "detections"),
    predict=Predict(draw=draw_detections),
)
