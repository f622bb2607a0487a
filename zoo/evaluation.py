"""Evaluation of registry models on datasets: EPE / outlier rate for optical flow (plus the zero-flow
baseline), mIoU / pixel accuracy for semantic segmentation, COCO box / mask AP for detection and
instance segmentation, S-measure / F-measure / MAE for RGB-D salient object detection, top-k accuracy
for classification. ``scripts/evaluate.py`` is a thin CLI over :func:`main`.

Pipeline per sample (batch 1, so real images of any size work): the model's registry transforms, the
model in eval mode, its registry postprocess back to the image size, then the metrics of
:mod:`zoo.flow` (flow), a confusion matrix (segmentation), pycocotools' ``COCOeval`` (detection),
:mod:`zoo.saliency` (salient object detection) or top-k hits (classification).

Metrics:
- flow: ``epe`` = mean over pairs of each pair's mean EPE over valid pixels (the FlyingChairs / Sintel
  table convention), ``epe_pixel`` = EPE averaged over all valid pixels of the set, ``fl`` = fraction
  of valid pixels with EPE > 3 px and > 5 % of |gt| (KITTI Fl, pixel-weighted), ``zero_epe`` /
  ``zero_fl`` = the same for a prediction of zero flow (the baseline every model must beat), and
  ``per_pair`` with every pair's numbers.
- segmentation: the confusion matrix over pixels whose label is not 255; ``miou`` = mean IoU over the
  classes present in the labels or the predictions (nanmean, as the VOC evaluation), ``pixel_accuracy``
  = correct / labelled pixels, ``iou`` per class (null when the class never occurs).
- detection / instance segmentation (:func:`evaluate_detection`, needs ``pycocotools``): the detections
  (postprocess with its score threshold, 0 by default; boxes x1y1x2y2 in input pixels, labels = COCO
  category ids) become COCO results as torchvision's references write them: boxes xywh, masks
  binarised at 0.5 (the postprocess's ``mask_threshold``) and run-length encoded with
  ``pycocotools.mask.encode``. ``COCOeval`` over the evaluated images gives ``bbox`` (and ``segm`` when
  the model outputs masks) each with ``ap`` (AP@[.5:.95]), ``ap50``, ``ap75`` and ``stats``, the 12
  numbers of ``COCOeval.summarize()`` by name; -1 (no ground truth in that area range) becomes NaN
  (null in JSON).
- RGB-D salient object detection (:func:`evaluate_saliency`): the maps of the ``rgbd-saliency``
  postprocess at the GT's resolution, scored per image with :mod:`zoo.saliency` and averaged over
  images as :class:`zoo.saliency.SaliencyMetrics` (PySODMetrics): ``s_measure`` (alpha 0.5), ``mae``,
  ``max_f`` / ``mean_f`` = max / mean over the 256 thresholds of the mean F-measure curve (beta^2 = 0.3),
  ``adaptive_f`` = F at the adaptive threshold ``min(2 mean, 1)``.
- classification (:func:`evaluate_classification`): ``top1`` / ``top5`` = fraction of images whose
  label (the folder's class index, sorted names) is among the k best of the postprocess's softmax
  top-k; ``per_class`` top-1 by class name.

Distributed: under ``torch.distributed`` (e.g. ``torchrun``) every rank evaluates samples
``rank, rank + world, ...``; per-sample results (flow pairs, COCO detections, saliency scores,
classification hits) are gathered and confusion matrices summed, so the numbers equal a
single-process run exactly (``COCOeval`` runs on every rank over the gathered detections).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from zoo.errors import InputError
from zoo.flow import epe as flow_epe
from zoo.flow import outlier_rate

__all__ = ["load_model", "evaluate_flow", "evaluate_segmentation", "evaluate_detection", "evaluate_saliency",
           "evaluate_classification", "coco_results", "COCO_STATS", "evaluate", "parse_overrides", "main"]


def parse_overrides(items: Sequence[str] | None) -> dict[str, Any]:
    """``["width=0.25", "batch_norm=true"]`` -> ``{"width": 0.25, "batch_norm": True}`` (values are YAML)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or ():
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"arch override {item!r} must look like key=value (e.g. width=0.25)")
        out[key.strip()] = yaml.safe_load(value)
    return out


def load_model(name: str, *, pretrained: bool | str = False, checkpoint: str | Path | None = None,
               arch_overrides: dict[str, Any] | None = None, num_classes: int | None = None,
               device: str | torch.device = "cpu") -> nn.Module:
    """A registry model in eval mode with weights from the registry (``pretrained``), a file
    (``checkpoint``: safetensors, a directory with ``model.safetensors``, or a training checkpoint
    ``.pt`` written by :mod:`zoo.training`), or random init."""
    import zoo

    overrides = dict(arch_overrides or {})
    if checkpoint is not None and Path(checkpoint).suffix in (".pt", ".pth", ".bin", ".ckpt"):
        return zoo.create(name, checkpoint=checkpoint, allow_pickle=True, num_classes=num_classes,
                          device=device, **overrides)
    return zoo.create(name, pretrained=pretrained, checkpoint=checkpoint, num_classes=num_classes,
                      device=device, **overrides)


def _dist() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather(items: list) -> list:
    rank, world = _dist()
    if world == 1:
        return items
    out: list = [None] * world
    dist.all_gather_object(out, items)
    return [x for part in out for x in part]


def _indices(n: int, max_samples: int | None) -> list[int]:
    n = n if max_samples is None else min(n, max_samples)
    rank, world = _dist()
    return list(range(rank, n, world))


@torch.no_grad()
def evaluate_flow(model: nn.Module | None, dataset: Dataset, *, transforms: nn.Module | None = None,
                  postprocess: nn.Module | None = None, device: str | torch.device = "cpu",
                  max_samples: int | None = None) -> dict[str, Any]:
    """EPE, Fl and the zero-flow baseline of ``model`` (None: baseline only) on a flow dataset."""
    if model is not None:
        transforms = transforms if transforms is not None else model.transforms
        postprocess = postprocess if postprocess is not None else model.postprocess
        was_training = model.training
        model.eval()
    rows = []
    for i in _indices(len(dataset), max_samples):
        s = dataset[i]
        gt = s["flow"].unsqueeze(0).to(device)
        valid = s["valid"].unsqueeze(0).to(device)
        zero = torch.zeros_like(gt)
        row = {"index": i, "id": str(s.get("id", i)), "valid_pixels": int(valid.sum()),
               "zero_epe": float(flow_epe(zero, gt, valid)), "zero_fl": float(outlier_rate(zero, gt, valid))}
        if model is not None:
            im1, im2 = s["image1"].unsqueeze(0).to(device), s["image2"].unsqueeze(0).to(device)
            pred = postprocess(model(transforms((im1, im2))), im1.shape[-2:]).float()
            row["epe"] = float(flow_epe(pred, gt, valid))
            row["fl"] = float(outlier_rate(pred, gt, valid))
        rows.append(row)
    if model is not None and was_training:
        model.train()
    rows = sorted(_gather(rows), key=lambda r: r["index"])
    n_pix = sum(r["valid_pixels"] for r in rows)
    out: dict[str, Any] = {"task": "optical-flow", "pairs": len(rows), "valid_pixels": n_pix}
    keys = ("zero_epe", "zero_fl") + (("epe", "fl") if model is not None else ())
    for key in keys:
        weighted = sum(r[key] * r["valid_pixels"] for r in rows) / max(n_pix, 1)
        per_pair = sum(r[key] for r in rows) / max(len(rows), 1)
        if key.endswith("epe"):
            out[key] = per_pair
            out[key + "_pixel"] = weighted
        else:
            out[key] = weighted
    if model is not None:
        out["epe_ratio"] = out["epe"] / out["zero_epe"] if out["zero_epe"] > 0 else math.nan
    out["per_pair"] = rows
    return out


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, dataset: Dataset, num_classes: int, *,
                          transforms: nn.Module | None = None, postprocess: nn.Module | None = None,
                          device: str | torch.device = "cpu", max_samples: int | None = None,
                          ignore_index: int = 255) -> dict[str, Any]:
    """Confusion matrix, mIoU and pixel accuracy of ``model`` on a segmentation dataset."""
    transforms = transforms if transforms is not None else model.transforms
    postprocess = postprocess if postprocess is not None else model.postprocess
    was_training = model.training
    model.eval()
    conf = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    for i in _indices(len(dataset), max_samples):
        s = dataset[i]
        image = s["image"].unsqueeze(0).to(device)
        label = s["label"].to(device).view(-1)
        pred = postprocess(model(transforms(image)), image.shape[-2:]).view(-1)
        keep = (label != ignore_index) & (label >= 0) & (label < num_classes)
        idx = label[keep] * num_classes + pred[keep].clamp(0, num_classes - 1)
        conf += torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)
    if was_training:
        model.train()
    if _dist()[1] > 1:
        dist.all_reduce(conf)
    conf = conf.cpu()
    tp = conf.diag().double()
    union = conf.sum(0).double() + conf.sum(1).double() - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))
    present = union > 0
    labelled = int(conf.sum())
    return {
        "task": "semantic-segmentation",
        "images": len(dataset) if max_samples is None else min(len(dataset), max_samples),
        "labelled_pixels": labelled,
        "miou": float(iou[present].mean()) if bool(present.any()) else math.nan,
        "pixel_accuracy": float(tp.sum() / labelled) if labelled else math.nan,
        "iou": [None if math.isnan(v) else v for v in iou.tolist()],
        "confusion": conf.tolist(),
    }


# ------------------------------------------------------------------------------------ COCO detection
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


def _check_sample(sample: Mapping[str, Any], keys: Sequence[str], what: str) -> None:
    missing = [k for k in keys if k not in sample]
    if missing:
        raise InputError(f"{what} needs samples with {list(keys)}; this dataset's samples lack {missing} "
                         f"(it has {sorted(sample)})")


def _run(model: nn.Module, dataset: Dataset, max_samples: int | None, keys: Sequence[str], what: str,
         score: Any) -> list[dict]:
    """``model`` in eval mode over this rank's samples: check ``keys``, one row ``{"index", "id",
    **score(sample)}`` per sample; the rows of every rank, sorted by index. The mode is restored."""
    was_training = model.training
    model.eval()
    rows = []
    try:
        for i in _indices(len(dataset), max_samples):
            s = dataset[i]
            _check_sample(s, keys, what)
            rows.append({"index": i, "id": str(s.get("id", i)), **score(s)})
    finally:
        if was_training:
            model.train()
    return sorted(_gather(rows), key=lambda r: r["index"])


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

    rows = _run(model, dataset, max_samples, ("image", "image_id"), "detection evaluation", score)
    has_masks = any(r["has_masks"] for r in rows)
    types = tuple(iou_types) if iou_types is not None else (("bbox", "segm") if has_masks else ("bbox",))
    if "segm" in types and not has_masks:
        raise InputError("mask AP (iou type 'segm') needs a model that outputs masks (Mask R-CNN)")
    n = len(dataset) if max_samples is None else min(len(dataset), max_samples)
    image_ids = [int(dataset.image_ids[i]) for i in range(n)]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(dataset.annotation_file))
    out: dict[str, Any] = {"task": "instance-segmentation" if has_masks else "object-detection", "images": n,
                           "annotation_file": str(dataset.annotation_file),
                           "detections": sum(r["detections"] for r in rows)}
    for iou_type in types:
        out[iou_type] = _coco_eval(gt, [d for r in rows for d in r[iou_type]], iou_type, image_ids)
    out["per_image"] = [{"index": r["index"], "id": r["id"], "detections": r["detections"]} for r in rows]
    return out


# ------------------------------------------------------------------------------------ RGB-D saliency
@torch.no_grad()
def evaluate_saliency(model: nn.Module, dataset: Dataset, *, transforms: nn.Module | None = None,
                      postprocess: nn.Module | None = None, device: str | torch.device = "cpu",
                      max_samples: int | None = None, normalize: bool = True) -> dict[str, Any]:
    """S-measure, max / mean / adaptive F-measure and MAE of an RGB-D saliency model (HDFNet).

    ``dataset``: samples with ``image`` (3, H, W) and ``depth`` (1, H, W) in [0, 1] and ``mask`` (H', W')
    bool (:class:`zoo.data.RGBDSaliency`). The model is called as ``model(*transforms(rgb, depth))``
    and its postprocess upsamples the map to the GT size. ``normalize``: min-max normalise each map
    before scoring (PySODMetrics; see :mod:`zoo.saliency`).
    """
    from zoo.saliency import f_measure_adaptive, f_measure_curve, mae, s_measure

    transforms = transforms if transforms is not None else model.transforms
    postprocess = postprocess if postprocess is not None else model.postprocess

    def score(s: Mapping[str, Any]) -> dict[str, Any]:
        rgb, depth, gt = s["image"].unsqueeze(0).to(device), s["depth"].unsqueeze(0).to(device), s["mask"]
        pred = postprocess(model(*transforms(rgb, depth)), gt.shape[-2:])[0].float().cpu()
        return {"mae": float(mae(pred, gt, normalize)), "s_measure": float(s_measure(pred, gt, normalize=normalize)),
                "adaptive_f": float(f_measure_adaptive(pred, gt, normalize=normalize)),
                "curve": f_measure_curve(pred, gt, normalize=normalize).tolist()}

    rows = _run(model, dataset, max_samples, ("image", "depth", "mask"), "saliency evaluation", score)
    if not rows:
        raise ValueError("saliency evaluation over zero images")
    n = len(rows)
    curve = torch.tensor([r.pop("curve") for r in rows], dtype=torch.float64).mean(0)
    return {"task": "salient-object-detection", "images": n,
            "s_measure": sum(r["s_measure"] for r in rows) / n, "max_f": float(curve.max()),
            "mean_f": float(curve.mean()), "adaptive_f": sum(r["adaptive_f"] for r in rows) / n,
            "mae": sum(r["mae"] for r in rows) / n, "per_image": rows}


# ------------------------------------------------------------------------------------ classification
@torch.no_grad()
def evaluate_classification(model: nn.Module, dataset: Dataset, *, transforms: nn.Module | None = None,
                            postprocess: nn.Module | None = None, device: str | torch.device = "cpu",
                            max_samples: int | None = None, topk: Sequence[int] = (1, 5)) -> dict[str, Any]:
    """Top-k accuracies of a classifier on a dataset of ``{"image", "label"}`` samples (ImageFolder).

    ``postprocess`` defaults to the ``classification`` preset with ``top_k = max(topk)`` (the model's
    own may keep fewer classes); a k above the number of classes counts every image as a hit.
    """
    from zoo.classification import ClassificationPostprocess

    ks = sorted({int(k) for k in topk})
    if not ks or ks[0] < 1:
        raise ValueError(f"topk must be positive integers, got {list(topk)}")
    transforms = transforms if transforms is not None else model.transforms
    postprocess = postprocess if postprocess is not None else ClassificationPostprocess(top_k=ks[-1])

    def score(s: Mapping[str, Any]) -> dict[str, Any]:
        image = s["image"].unsqueeze(0).to(device)
        output = model(transforms(image))
        logits = output["out"] if isinstance(output, Mapping) else output
        label, num_classes = int(s["label"]), logits.shape[-1]
        if label >= num_classes:
            raise InputError(f"sample {s.get('id')} has class index {label}, but the model predicts "
                             f"{num_classes} classes")
        ranked = postprocess(output, image.shape[-2:])["labels"][0].tolist()
        return {"label": label, "pred": int(ranked[0]),
                **{f"top{k}": label in ranked[:k] or k >= num_classes for k in ks}}

    rows = _run(model, dataset, max_samples, ("image", "label"), "classification evaluation", score)
    if not rows:
        raise ValueError("classification evaluation over zero images")
    n = len(rows)
    out: dict[str, Any] = {"task": "image-classification", "images": n}
    for k in ks:
        out[f"top{k}"] = sum(r[f"top{k}"] for r in rows) / n
    names = list(getattr(dataset, "classes", [])) or None
    per_class: dict[str, list[int]] = {}
    for r in rows:
        key = names[r["label"]] if names else str(r["label"])
        hits = per_class.setdefault(key, [0, 0])
        hits[0] += int(r["pred"] == r["label"])
        hits[1] += 1
    out["per_class"] = {c: h / t for c, (h, t) in sorted(per_class.items())}
    out["per_image"] = rows
    return out


def evaluate(model: nn.Module | None, dataset: Dataset, task: str, **kwargs: Any) -> dict[str, Any]:
    """Dispatch on the task: ``optical-flow``, ``semantic-segmentation``, ``object-detection`` /
    ``instance-segmentation``, ``salient-object-detection`` or ``image-classification``."""
    if task == "optical-flow":
        return evaluate_flow(model, dataset, **kwargs)
    if model is None:
        raise ValueError(f"{task} evaluation needs a model")
    if task == "semantic-segmentation":
        num_classes = kwargs.pop("num_classes", None) or getattr(dataset, "num_classes", None) \
            or model.info.args.get("num_classes")
        return evaluate_segmentation(model, dataset, int(num_classes), **kwargs)
    kwargs.pop("num_classes", None)
    if task in ("object-detection", "instance-segmentation"):
        return evaluate_detection(model, dataset, **kwargs)
    if task == "salient-object-detection":
        return evaluate_saliency(model, dataset, **kwargs)
    if task == "image-classification":
        return evaluate_classification(model, dataset, **kwargs)
    raise ValueError(f"no evaluation for task {task!r} (supported: optical-flow, semantic-segmentation, "
                     "object-detection, instance-segmentation, salient-object-detection, image-classification)")


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="evaluate.py",
        description="Evaluate a zoo model (or the zero-flow baseline) on a dataset; writes JSON.",
        epilog="Data specs: flyingchairs:PATH, middlebury:PATH, voc:PATH[@split], flying-shapes:N, shapes:N, shapes-flat:N, "
               "coco:PATH[@annotations.json] (box / mask AP, needs pycocotools), rgbd-sod:PATH (S-measure, F, MAE), "
               "imagefolder:PATH (top-1 / top-5). Runs under torchrun for several processes (gloo).")
    p.add_argument("--data", required=True, help="dataset spec")
    p.add_argument("--model", help="registry name (omit with a flow dataset for the zero-flow baseline only)")
    p.add_argument("--pretrained", default=None, help="registry weights tag (or 'default')")
    p.add_argument("--checkpoint", default=None, help="weights file: safetensors or a training checkpoint .pt")
    p.add_argument("--arch-override", action="append", default=[], metavar="KEY=VALUE",
                   help="constructor argument override, e.g. width=0.25 (repeatable)")
    p.add_argument("--transform-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="override an argument of the model's transforms preset, e.g. size=320 (repeatable)")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"), help="size of procedural data")
    p.add_argument("--seed", type=int, default=12345, help="seed of procedural data (keep it apart from training)")
    p.add_argument("--max-samples", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--per-pair", action="store_true", help="keep per-pair / per-image rows in the JSON")
    p.add_argument("--out", default=None, help="JSON output file (printed to stdout as well)")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    import os

    import zoo
    from zoo.data import dataset_from_spec

    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = False
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
        started = True
    try:
        # The procedural data of the recorded metrics has scikit-image's photo textures: without scikit-image
        # this is an ImportError naming the extra (pip install "dynzoo[train]"), never other (procedural) textures.
        dataset = dataset_from_spec(args.data, size=args.size, seed=args.seed, textures="skimage")
        model = None
        if args.model:
            pretrained: bool | str = False
            if args.pretrained:
                pretrained = True if args.pretrained == "default" else args.pretrained
            model = load_model(args.model, pretrained=pretrained, checkpoint=args.checkpoint,
                               arch_overrides=parse_overrides(args.arch_override), num_classes=args.num_classes,
                               device=args.device)
            task = model.info.task
            if args.transform_arg:
                from zoo.registry import Preset
                from zoo.transforms import build_transforms

                spec = model.info.transforms
                spec = Preset(spec.preset, {**spec.args, **parse_overrides(args.transform_arg)})
                object.__setattr__(model, "transforms", build_transforms(spec, model.info.name))
        elif "image1" in dataset[0]:
            task = "optical-flow"
        else:
            raise SystemExit("--model is required unless the data is optical flow (zero-flow baseline)")
        result = evaluate(model, dataset, task, device=args.device, max_samples=args.max_samples,
                          **({"num_classes": args.num_classes} if task == "semantic-segmentation" else {}))
        if not args.per_pair:
            result.pop("per_pair", None)
            result.pop("per_image", None)
        result = {"data": args.data, "model": args.model, "pretrained": args.pretrained,
                  "checkpoint": args.checkpoint, "arch_overrides": parse_overrides(args.arch_override),
                  **({"transform_args": parse_overrides(args.transform_arg)} if args.transform_arg else {}),
                  **result, "zoo_version": zoo.__version__}
        result = _json_safe(result)
        if _dist()[0] == 0:
            text = json.dumps(result, indent=2)
            if args.out:
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(text + "\n")
            summary = {k: v for k, v in result.items() if k not in ("confusion", "iou", "per_pair", "per_image")}
            print(json.dumps(summary), file=sys.stdout)
        return result
    finally:
        if started:
            dist.destroy_process_group()
