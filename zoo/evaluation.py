"""Evaluation of registry models on datasets: EPE / outlier rate for optical flow, mIoU / pixel accuracy
for semantic segmentation, plus the zero-flow baseline. ``scripts/evaluate.py`` is a thin CLI over
:func:`main`.

Pipeline per sample (batch 1, so real images of any size work): the model's registry transforms, the
model in eval mode, its registry postprocess back to the image size, then the metrics of
:mod:`zoo.flow` (flow) or a confusion matrix (segmentation).

Metrics:
- flow: ``epe`` = mean over pairs of each pair's mean EPE over valid pixels (the FlyingChairs / Sintel
  table convention), ``epe_pixel`` = EPE averaged over all valid pixels of the set, ``fl`` = fraction
  of valid pixels with EPE > 3 px and > 5 % of |gt| (KITTI Fl, pixel-weighted), ``zero_epe`` /
  ``zero_fl`` = the same for a prediction of zero flow (the baseline every model must beat), and
  ``per_pair`` with every pair's numbers.
- segmentation: the confusion matrix over pixels whose label is not 255; ``miou`` = mean IoU over the
  classes present in the labels or the predictions (nanmean, as the VOC evaluation), ``pixel_accuracy``
  = correct / labelled pixels, ``iou`` per class (null when the class never occurs).

Distributed: under ``torch.distributed`` (e.g. ``torchrun``) every rank evaluates samples
``rank, rank + world, ...``; per-pair results are gathered and confusion matrices summed, so the
numbers equal a single-process run exactly.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from zoo.flow import epe as flow_epe
from zoo.flow import outlier_rate

__all__ = ["load_model", "evaluate_flow", "evaluate_segmentation", "evaluate", "parse_overrides", "main"]


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


def evaluate(model: nn.Module | None, dataset: Dataset, task: str, **kwargs: Any) -> dict[str, Any]:
    """Dispatch on the task (``optical-flow`` or ``semantic-segmentation``)."""
    if task == "optical-flow":
        return evaluate_flow(model, dataset, **kwargs)
    if task == "semantic-segmentation":
        if model is None:
            raise ValueError("segmentation evaluation needs a model")
        num_classes = kwargs.pop("num_classes", None) or getattr(dataset, "num_classes", None) \
            or model.info.args.get("num_classes")
        return evaluate_segmentation(model, dataset, int(num_classes), **kwargs)
    raise ValueError(f"no evaluation for task {task!r} (supported: optical-flow, semantic-segmentation)")


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
        epilog="Data specs: flyingchairs:PATH, middlebury:PATH, voc:PATH[@split], flying-shapes:N, shapes:N. "
               "Runs under torchrun for several processes (gloo).")
    p.add_argument("--data", required=True, help="dataset spec")
    p.add_argument("--model", help="registry name (omit with a flow dataset for the zero-flow baseline only)")
    p.add_argument("--pretrained", default=None, help="registry weights tag (or 'default')")
    p.add_argument("--checkpoint", default=None, help="weights file: safetensors or a training checkpoint .pt")
    p.add_argument("--arch-override", action="append", default=[], metavar="KEY=VALUE",
                   help="constructor argument override, e.g. width=0.25 (repeatable)")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"), help="size of procedural data")
    p.add_argument("--seed", type=int, default=12345, help="seed of procedural data (keep it apart from training)")
    p.add_argument("--max-samples", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--per-pair", action="store_true", help="keep per-pair rows in the JSON")
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
        dataset = dataset_from_spec(args.data, size=args.size, seed=args.seed)
        model = None
        if args.model:
            pretrained: bool | str = False
            if args.pretrained:
                pretrained = True if args.pretrained == "default" else args.pretrained
            model = load_model(args.model, pretrained=pretrained, checkpoint=args.checkpoint,
                               arch_overrides=parse_overrides(args.arch_override), num_classes=args.num_classes,
                               device=args.device)
            task = model.info.task
        elif "image1" in dataset[0]:
            task = "optical-flow"
        else:
            raise SystemExit("--model is required for segmentation data")
        result = evaluate(model, dataset, task, device=args.device, max_samples=args.max_samples,
                          **({"num_classes": args.num_classes} if task == "semantic-segmentation" else {}))
        if not args.per_pair:
            result.pop("per_pair", None)
        result = {"data": args.data, "model": args.model, "pretrained": args.pretrained,
                  "checkpoint": args.checkpoint, "arch_overrides": parse_overrides(args.arch_override),
                  **result, "zoo_version": zoo.__version__}
        result = _json_safe(result)
        if _dist()[0] == 0:
            text = json.dumps(result, indent=2)
            if args.out:
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(text + "\n")
            summary = {k: v for k, v in result.items() if k not in ("confusion", "iou", "per_pair")}
            print(json.dumps(summary), file=sys.stdout)
        return result
    finally:
        if started:
            dist.destroy_process_group()
