"""Evaluation of registry models on datasets; ``scripts/evaluate.py`` is a thin CLI over :func:`main`.

Each task's evaluator and metrics are its :class:`zoo.tasks.Task`'s (see the task modules for the
definitions): EPE / outlier rate for optical flow (plus the zero-flow baseline,
:func:`zoo.tasks.optical_flow.evaluate_flow`), mIoU / pixel accuracy for semantic segmentation, COCO box /
mask AP for detection and instance segmentation, S-measure / F-measure / MAE for RGB-D salient object
detection, top-k accuracy for classification, BCE (with the copy-last-frame baseline) for video prediction
(:func:`zoo.tasks.video_prediction.evaluate_video`). They are re-exported here.

Pipeline per sample (batch 1, so real images of any size work): the model's registry transforms, the
model in eval mode, its registry postprocess back to the image size, then the task's metrics.

Distributed: under ``torch.distributed`` (e.g. ``torchrun``) every rank evaluates samples
``rank, rank + world, ...``; per-sample results (flow pairs, COCO detections, saliency scores,
classification hits) are gathered and confusion matrices summed, so the numbers equal a
single-process run exactly (``COCOeval`` runs on every rank over the gathered detections).
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

from zoo.io import write_atomic
from zoo._version import __version__
from zoo.distributed import rank_and_world
from zoo.factory import create, parse_overrides
from zoo.tasks import OPTICAL_FLOW, TASK_NAMES, TASKS, VIDEO_PREDICTION, get_task
from zoo.tasks.image_classification import evaluate_classification
from zoo.tasks.object_detection import COCO_STATS, coco_results, evaluate_detection
from zoo.tasks.optical_flow import evaluate_flow
from zoo.tasks.salient_object_detection import evaluate_saliency
from zoo.tasks.semantic_segmentation import evaluate_segmentation
from zoo.tasks.video_prediction import evaluate_video

__all__ = ["load_model", "evaluate_flow", "evaluate_segmentation", "evaluate_detection", "evaluate_saliency",
           "evaluate_classification", "evaluate_video", "coco_results", "COCO_STATS", "evaluate", "parse_overrides", "main"]


def load_model(name: str, *, pretrained: bool | str = False, checkpoint: str | Path | None = None,
               arch_overrides: dict[str, Any] | None = None, num_classes: int | None = None,
               device: str | torch.device = "cpu") -> nn.Module:
    """A registry model in eval mode with weights from the registry (``pretrained``), a file
    (``checkpoint``: safetensors, a directory with ``model.safetensors``, or a training checkpoint
    ``.pt`` written by :mod:`zoo.training`), or random init."""
    overrides = dict(arch_overrides or {})
    if checkpoint is not None and Path(checkpoint).suffix in (".pt", ".pth", ".bin", ".ckpt"):
        return create(name, checkpoint=checkpoint, allow_pickle=True, num_classes=num_classes,
                      device=device, **overrides)
    return create(name, pretrained=pretrained, checkpoint=checkpoint, num_classes=num_classes,
                  device=device, **overrides)


def evaluate(model: nn.Module | None, dataset: Dataset, task: str, **kwargs: Any) -> dict[str, Any]:
    """The metrics of ``model`` on ``dataset`` by the evaluator of ``task`` (a :data:`zoo.tasks.TASKS` name);
    options an evaluator does not take (e.g. ``num_classes`` outside segmentation) are dropped."""
    evaluated = [t.name for t in TASKS if t.evaluator is not None]
    spec = get_task(task) if task in TASK_NAMES else None
    if spec is None or spec.evaluator is None:
        if model is None and spec is not None:
            raise ValueError(f"{task} evaluation needs a model")
        raise ValueError(f"no evaluation for task {task!r} (supported: {', '.join(evaluated)})")
    return spec.evaluate(model, dataset, **kwargs)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _replace_postprocess(model: nn.Module, preset: str | None, overrides: dict[str, Any]) -> None:
    """``model.postprocess`` rebuilt from its registry preset (or ``preset``, then without the registry's
    arguments) with ``overrides`` on top."""
    from zoo.errors import RegistryError
    from zoo.registry import Preset, thaw
    from zoo.transforms import build_postprocess

    spec = model.info.postprocess
    base = thaw(spec.args) if preset in (None, spec.preset) else {}
    spec = Preset(preset or spec.preset, {**base, **overrides})
    try:
        built = build_postprocess(spec, model.info.name)
    except RegistryError as exc:
        raise SystemExit(f"evaluate.py: --postprocess / --postprocess-arg: {exc}") from None
    object.__setattr__(model, "postprocess", built)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="evaluate.py",
        description="Evaluate a zoo model (or the zero-flow / copy-last-frame baseline) on a dataset; writes JSON.",
        epilog="Data specs: flyingchairs:PATH, middlebury:PATH, voc:PATH[@split], flying-shapes:N, shapes:N, shapes-flat:N, "
               "coco:PATH[@annotations.json] (box / mask AP, needs pycocotools), rgbd-sod:PATH (S-measure, F, MAE), "
               "imagefolder:PATH (top-1 / top-5), moving-digits:N[@test] (BCE, copy-last-frame baseline). Runs under torchrun for several processes (gloo).")
    p.add_argument("--data", required=True, help="dataset spec")
    p.add_argument("--model", help="registry name (omit with a flow dataset for the zero-flow baseline only)")
    p.add_argument("--pretrained", default=None, help="registry weights tag (or 'default')")
    p.add_argument("--checkpoint", default=None, help="weights file: safetensors or a training checkpoint .pt")
    p.add_argument("--arch-override", action="append", default=[], metavar="KEY=VALUE",
                   help="constructor argument override, e.g. width=0.25 (repeatable)")
    p.add_argument("--transform-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="override an argument of the model's transforms preset, e.g. size=320 (repeatable)")
    p.add_argument("--postprocess", default=None, metavar="PRESET",
                   help="use this postprocess preset instead of the model's, e.g. segmentation (the network's own "
                        "argmax labels, without the dense CRF of segmentation-crf)")
    p.add_argument("--postprocess-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="override an argument of the model's postprocess preset, e.g. bi_weight=20 (repeatable)")
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
        postprocess_args = parse_overrides(args.postprocess_arg, "--postprocess-arg")
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
                spec = Preset(spec.preset, {**spec.args, **parse_overrides(args.transform_arg, "--transform-arg")})
                object.__setattr__(model, "transforms", build_transforms(spec, model.info.name, model.info.min_input_size))
            if args.postprocess or args.postprocess_arg:
                _replace_postprocess(model, args.postprocess, postprocess_args)
        elif "image1" in dataset[0]:
            task = OPTICAL_FLOW.name
        elif "targets" in dataset[0]:
            task = VIDEO_PREDICTION.name
        else:
            raise SystemExit("--model is required unless the data is optical flow (zero-flow baseline) or video "
                             "(copy-last-frame baseline)")
        result = evaluate(model, dataset, task, device=args.device, max_samples=args.max_samples,
                          num_classes=args.num_classes)
        if not args.per_pair:
            result.pop("per_pair", None)
            result.pop("per_image", None)
        result = {"data": args.data, "model": args.model, "pretrained": args.pretrained,
                  "checkpoint": args.checkpoint, "arch_overrides": parse_overrides(args.arch_override),
                  **({"transform_args": parse_overrides(args.transform_arg, "--transform-arg")} if args.transform_arg else {}),
                  **({"postprocess": args.postprocess} if args.postprocess else {}),
                  **({"postprocess_args": postprocess_args} if postprocess_args else {}),
                  **result, "zoo_version": __version__}
        result = _json_safe(result)
        if rank_and_world()[0] == 0:
            text = json.dumps(result, indent=2)
            if args.out:
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                write_atomic(args.out, text + "\n")
            summary = {k: v for k, v in result.items() if k not in ("confusion", "iou", "per_pair", "per_image")}
            print(json.dumps(summary), file=sys.stdout)
        return result
    finally:
        if started:
            dist.destroy_process_group()
