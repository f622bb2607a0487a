"""The command line of ``scripts/train.py``: :func:`build_parser` (one option per :class:`TrainConfig` field
it exposes) and :func:`main`, which runs :func:`zoo.training.loop.train` single process or under ``torchrun``."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from zoo.distributed import rank_and_world
from zoo.factory import parse_overrides
from zoo.tasks.semantic_segmentation import CLASS_WEIGHT_SAMPLES
from zoo.training.loop import TrainConfig, train

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig(model="", out="")
    p = argparse.ArgumentParser(
        prog="train.py", description="Train a zoo registry model (optical flow, segmentation, classification, "
                                     "instance segmentation or video prediction).",
        epilog="Data specs: flying-shapes[:N][?KEY=VALUE&...], shapes[:N], shapes-flat[:N], flyingchairs:PATH[@train], voc:PATH[@train], "
               "digits[@train], moving-digits[:N], imagefolder:PATH, coco:PATH[@annotations.json]. "
               "Several processes: torchrun --nproc_per_node N scripts/train.py ... (gloo). "
               "Re-running with the same --out resumes from its newest checkpoint.")
    p.add_argument("--model", required=True, help="registry name, e.g. flownets")
    p.add_argument("--out", required=True, help="run directory (checkpoints, log.jsonl, model.safetensors)")
    p.add_argument("--data", default=d.data)
    p.add_argument("--arch-override", action="append", default=[], metavar="KEY=VALUE",
                   help="constructor argument override (YAML value), e.g. width=0.25; repeatable")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--pretrained", default=None, help="start from registry weights (tag or 'default')")
    p.add_argument("--init-checkpoint", default=None, help="start from a weights file")
    p.add_argument("--warm-start", default=None, metavar="MODEL.TAG|FILE",
                   help="copy the tensors whose name and shape match from registry weights (e.g. "
                        "flownets-small.flyingshapes-28250) or a weights file into the fresh model "
                        "(plain FlowNet weights fill a FlowNet with LS-DFN, zero on the LS-DFN channels); "
                        "the rest keeps its initialisation (listed in OUT/warm_start.json)")
    p.add_argument("--steps", type=int, default=d.steps, help="total optimisation steps")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="GLOBAL batch size (split over processes)")
    p.add_argument("--size", type=int, nargs=2, default=list(d.size), metavar=("H", "W"), help="training crop")
    p.add_argument("--optimizer", default=d.optimizer, choices=("adam", "adamw", "sgd"))
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--schedule", default=d.schedule, choices=("constant", "multistep", "poly"))
    p.add_argument("--milestones", type=int, nargs="*", default=[], help="multistep: steps where lr *= gamma")
    p.add_argument("--gamma", type=float, default=d.gamma)
    p.add_argument("--warmup", type=int, default=0, help="linear warmup steps")
    p.add_argument("--max-grad-norm", type=float, default=None)
    p.add_argument("--flow-reduction", default=d.flow_reduction, choices=("sum", "mean"))
    p.add_argument("--aux-weight", type=float, default=d.aux_weight)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--textures", default=d.textures, choices=("auto", "skimage", "procedural"))
    p.add_argument("--workers", type=int, default=d.workers, help="DataLoader worker processes")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints)
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--eval-data", default=None, help="dataset spec evaluated every --eval-every steps")
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--time-limit", type=float, default=None, help="seconds; checkpoint and stop when exceeded")
    p.add_argument("--device", default=d.device)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads per process")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    p.add_argument("--dump-replicas", action="store_true", help="also write replica-RANK.safetensors (DDP checks)")
    p.add_argument("--photometric", type=float, default=d.photometric, metavar="STRENGTH",
                   help="optical flow: FlowNet's photometric jitter scaled by STRENGTH in [0, 1] (0 = off)")
    p.add_argument("--hflip", type=float, default=d.hflip, metavar="PROBABILITY",
                   help="instance segmentation: flip image, boxes and masks left-right with this probability "
                        "(AdelaiDet: 0.5)")
    p.add_argument("--augment-shift", type=int, default=d.augment_shift,
                   help="classification: random translation of up to +-N pixels (zero padding)")
    p.add_argument("--temperature-anneal", type=int, default=d.temperature_anneal, metavar="STEPS",
                   help="DyConv2d models: anneal the attention temperature linearly from --temperature-start "
                        "to 1 over the first STEPS steps (Dynamic Convolution: 30 -> 1 over 10 epochs)")
    p.add_argument("--temperature-start", type=float, default=d.temperature_start)
    p.add_argument("--class-weights", default=d.class_weights, choices=("none", "median-frequency"),
                   help="segmentation: weight the cross-entropy per class by median frequency balancing, "
                        f"estimated on the first {CLASS_WEIGHT_SAMPLES} training samples (class_weights.json)")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    cfg = TrainConfig(**{**options, "arch_overrides": parse_overrides(args.arch_override), "size": tuple(args.size),
                         "milestones": tuple(args.milestones)})
    started = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cfg.device.startswith("cuda") else "gloo")
        started = True
    try:
        record = train(cfg, progress=not args.no_progress)
        if rank_and_world()[0] == 0:
            print(json.dumps(record))
        return record
    finally:
        if started:
            dist.destroy_process_group()
