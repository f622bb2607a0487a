"""Training of registry models, single process or ``torchrun`` with DistributedDataParallel, with exact
resume. ``scripts/train.py`` is a thin CLI over :func:`main`.

The model is always the registry architecture: ``zoo.create(name, **arch_overrides)`` (optionally with
registry weights or a checkpoint), then ``.train()``; no model is defined here. What depends on the task
is its :class:`zoo.tasks.Training` (``zoo.tasks.<task>``): the step (loss and logged metric), the network
input, the data stream (augmentation) and whether the transforms keep their ``resize``. Trained tasks:
optical flow (FlowNet's multi-scale EPE, :mod:`zoo.tasks.optical_flow`), semantic segmentation
(cross-entropy, :mod:`zoo.tasks.semantic_segmentation`), image classification (cross-entropy,
:mod:`zoo.tasks.image_classification`), instance segmentation (the detector's own losses, CondInst's
FCOS and dice losses, on COCO instances, :mod:`zoo.tasks.instance_segmentation`) and video prediction (BCE
per image, :mod:`zoo.tasks.video_prediction`). The loop (:func:`train`) asks the task for its step and the
:class:`zoo.checkpoints.Checkpointer` for saving and resuming.

Dynamic Convolution temperature (Chen et al. 2020 anneal the attention softmax temperature of every
DyConv2d linearly from 30 to 1 over the first 10 epochs): ``temperature_anneal`` = n > 0 sets, before
every step s, ``zoo.ops.dy_conv.set_temperature(model, temperature_schedule(s, temperature_start, 1, n))``
(per iteration; 1 from step n on, the inference value). The temperature is a function of the step, so
exact resume holds; a run must reach step n for its weights to match temperature-1 inference.

Data order and exact resume: global sample position ``p = step * batch + j`` (j < global batch) is
rank ``j // (batch / world)``'s; procedural datasets render sample p directly (deterministic per
(seed, p)); finite datasets read a per-epoch permutation seeded by (seed, epoch) and take a random crop
seeded by (seed, p) (:mod:`zoo.data.positions`). The data position is therefore the step number. A
checkpoint (:mod:`zoo.checkpoints`) holds the model, optimizer, scheduler, step, config and every rank's
torch / Python RNG states; training N steps straight and N/2 + resume + N/2 give bit-identical weights on
the same machine and thread count.

DDP: ``torchrun --nproc_per_node N scripts/train.py ...`` (gloo backend; nccl with ``--device cuda``).
The batch size is the GLOBAL batch (each rank takes batch / N), per-rank losses are batch means, so
DDP's gradient average equals the single-process gradient of the same global batch (up to float
summation order; BatchNorm statistics are per rank).

Warm start (``warm_start``, :func:`zoo.checkpoints.warm_start`): the tensors of registry weights
``MODEL.TAG`` or a weights file whose name and shape match are copied into the seeded model;
``warm_start.json`` lists what was copied, expanded and kept.

Weight averaging (:func:`average_checkpoints`, ``scripts/average_checkpoints.py``; SWA): the mean of several
checkpoints of one run; :func:`recompute_batchnorm` then gives a network with BatchNorm the running
statistics of its own activations (SWA's ``update_bn``: the averaged statistics are not those).

Outputs in ``out``: ``log.jsonl`` (one JSON object per logged step: step, loss, the task's metric, lr,
seconds per step, samples/s, the DyConv2d temperature when annealing; eval results when ``eval_data`` is
set), checkpoints, ``model.safetensors`` (final weights, loadable with ``zoo.create(name, checkpoint=...,
**overrides)``) and ``config.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from zoo.io import write_atomic
from zoo.checkpoints import Checkpointer, save_weights, warm_start
from zoo.data.positions import PositionStream, StepBatchSampler
from zoo.distributed import rank_and_world
from zoo.evaluation import evaluate, load_model
from zoo.factory import parse_overrides
from zoo.ops.dy_conv import set_temperature, temperature_schedule
from zoo.registry import Preset, thaw
from zoo.tasks import TASKS, Training, TrainingRun, get_task
from zoo.transforms import build_transforms

# The tasks' losses and streams, re-exported where they used to live.
from zoo.tasks.image_classification import ClassificationStream  # noqa: E402
from zoo.tasks.optical_flow import FLOWNET_WEIGHTS, FlowStream, full_res_epe, multiscale_epe_loss  # noqa: E402
from zoo.tasks.semantic_segmentation import (CLASS_WEIGHT_SAMPLES, median_frequency_weights,  # noqa: E402
                                             segmentation_loss)

__all__ = ["TrainConfig", "train", "average_checkpoints", "recompute_batchnorm", "main", "warm_start",
           "training_transforms", "PositionStream", "ClassificationStream", "FlowStream", "FLOWNET_WEIGHTS",
           "multiscale_epe_loss", "full_res_epe", "segmentation_loss", "median_frequency_weights"]


@dataclasses.dataclass
class TrainConfig:
    """Everything a run depends on (saved in checkpoints and config.json)."""

    model: str
    out: str
    data: str = "flying-shapes"
    arch_overrides: dict = dataclasses.field(default_factory=dict)
    num_classes: int | None = None
    pretrained: str | None = None
    init_checkpoint: str | None = None
    warm_start: str | None = None
    steps: int = 1000
    batch_size: int = 8
    size: tuple = (192, 256)
    optimizer: str = "adam"
    lr: float = 1e-4
    weight_decay: float = 0.0
    momentum: float = 0.9
    betas: tuple = (0.9, 0.999)
    schedule: str = "constant"
    milestones: tuple = ()
    gamma: float = 0.5
    poly_power: float = 0.9
    warmup: int = 0
    max_grad_norm: float | None = None
    flow_reduction: str = "sum"
    aux_weight: float = 0.5
    seed: int = 0
    textures: str = "auto"
    workers: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 10
    eval_data: str | None = None
    eval_every: int = 0
    time_limit: float | None = None
    device: str = "cpu"
    dump_replicas: bool = False
    augment_shift: int = 0
    photometric: float = 0.0
    hflip: float = 0.0
    temperature_anneal: int = 0
    temperature_start: float = 30.0
    class_weights: str = "none"

    # fields that must match when resuming (steps, time limit, logging... may change)
    RESUME_KEYS = ("model", "data", "arch_overrides", "num_classes", "batch_size", "size", "optimizer",
                   "seed", "textures", "flow_reduction", "photometric", "class_weights", "hflip")


# ------------------------------------------------------------------------------------------- inputs
def training_transforms(model: nn.Module) -> nn.Module:
    """The entry's transforms preset without ``resize`` (inputs and targets must stay aligned), or the whole
    preset when the task keeps it (classification, as in evaluation: removing ``resize`` would fall back to
    the preset's default, ImageNet's 256, and zoom small images)."""
    info = model.info
    if _training(info.task).keep_resize:
        return build_transforms(info.transforms, info.name)
    args = thaw(info.transforms.args)
    args.pop("resize", None)
    return build_transforms(Preset(info.transforms.preset, args), info.name)


def _training(task: str) -> Training:
    """The :class:`Training` of ``task``; ValueError naming the trainable tasks when it has none."""
    training = get_task(task).training
    if training is None:
        trainable = [t.name for t in TASKS if t.training is not None]
        raise ValueError(f"{task} models are not trained here; training supports {', '.join(trainable)}")
    return training


# ------------------------------------------------------------------------------------------- helpers
def _make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer in ("adam", "adamw"):
        adam = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
        return adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"optimizer must be adam, adamw or sgd, got {cfg.optimizer!r}")


def _lr_factor(cfg: TrainConfig, step: int) -> float:
    """Multiplier of the base lr at ``step`` (linear warmup, then the schedule)."""
    warm = min(1.0, (step + 1) / cfg.warmup) if cfg.warmup > 0 else 1.0
    if cfg.schedule == "constant":
        return warm
    if cfg.schedule == "multistep":   # FlowNet: halve at fixed steps
        return warm * cfg.gamma ** sum(step >= m for m in cfg.milestones)
    if cfg.schedule == "poly":        # DeepLab: (1 - step / steps) ** power
        return warm * (1 - min(step, cfg.steps) / cfg.steps) ** cfg.poly_power
    raise ValueError(f"schedule must be constant, multistep or poly, got {cfg.schedule!r}")


def _config_dict(cfg: TrainConfig) -> dict:
    d = dataclasses.asdict(cfg)
    return json.loads(json.dumps(d))  # tuples -> lists, plain JSON types


def average_checkpoints(paths: Sequence[str | Path], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Uniform average of the model tensors of several checkpoints of one run (:meth:`Checkpointer.average`)."""
    return Checkpointer.average(paths, dtype)


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, data: str, *, batches: int = 100, batch_size: int = 8,
                        size: tuple[int, int] = (192, 256), seed: int = 1000, textures: str = "auto",
                        photometric: float = 0.0) -> int:
    """SWA's BatchNorm update (Izmailov et al. 2018, torch.optim.swa_utils.update_bn) for averaged weights.

    Averaging checkpoints also averages their running statistics, which are not the statistics of the
    averaged network's own activations. This resets every BatchNorm layer of ``model`` (made by
    :func:`zoo.create`: its entry gives the task and the transforms) and sets its
    running mean and variance to the plain mean of the batch statistics over ``batches`` batches of
    ``batch_size`` training samples of ``data`` (a dataset spec, read as a run would read it, through
    the entry's training transforms, at data ``seed``: keep it apart from the run's and the evaluation's).
    The model keeps its mode and the layers their momentum. Returns the number of BatchNorm layers.
    """
    from zoo.data import dataset_from_spec

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise ValueError(f"{model.info.name if hasattr(model, 'info') else type(model).__name__} has no "
                         "BatchNorm layer: there are no running statistics to recompute")
    if batches < 1 or batch_size < 1:
        raise ValueError(f"batches and batch_size must be positive, got {batches} and {batch_size}")
    training = _training(model.info.task)
    device = next(model.parameters()).device
    transforms = training_transforms(model).to(device)
    base = dataset_from_spec(data, size=tuple(size), seed=seed, split="train", textures=textures)
    stream = training.stream(base, seed, tuple(size), {"photometric": photometric})

    def inputs():
        for b in range(batches):
            batch = training.collate(stream.__getitems__(range(b * batch_size, (b + 1) * batch_size)))
            yield training.network_input(transforms, {k: v.to(device) for k, v in batch.items()})

    torch.optim.swa_utils.update_bn(inputs(), model)
    return len(norms)


# ------------------------------------------------------------------------------------------- training
@dataclasses.dataclass
class _Session:
    """A prepared run: what :func:`train`'s loop reads."""

    cfg: TrainConfig
    out: Path
    device: torch.device
    rank: int
    world: int
    model: nn.Module
    ddp_model: nn.Module
    training: Training
    run: TrainingRun
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    checkpointer: Checkpointer
    loader: DataLoader
    start: int
    eval_set: Dataset | None


def train(cfg: TrainConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) a training run; returns the last logged record. See the module docstring."""
    s = _prepare(cfg)
    log = (s.out / "log.jsonl").open("a") if s.rank == 0 else None
    bar = _progress_bar(cfg, s.start) if progress and s.rank == 0 else None
    record: dict[str, Any] = {}
    step, steps_since, t_last = s.start, 0, time.perf_counter()
    t_begin = t_last
    try:
        for batch in s.loader:
            batch = {k: v.to(s.device) for k, v in batch.items()}
            if cfg.temperature_anneal > 0:
                set_temperature(s.model, _temperature(cfg, step))
            loss, metric = s.training.step(s.ddp_model, batch, s.run)
            s.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(s.model.parameters(), cfg.max_grad_norm)
            s.optimizer.step()
            s.scheduler.step()
            step, steps_since = step + 1, steps_since + 1
            if bar is not None:
                bar.update(1)
            stop = cfg.time_limit is not None and _on_any_rank(time.perf_counter() - t_begin > cfg.time_limit, s.world)
            if step % cfg.log_every == 0 or step == cfg.steps or stop:
                now = time.perf_counter()
                record = _record(s, step, loss, metric, (now - t_last) / max(steps_since, 1))
                t_last, steps_since = now, 0
                _write_record(record, log, bar, s.training.metric)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or stop:
                s.checkpointer.save(step, s.model, s.optimizer, s.scheduler, _config_dict(cfg))
            if stop:
                break
    finally:
        for handle in (bar, log):
            if handle is not None:
                handle.close()
    if s.rank == 0:
        save_weights(s.model, s.out / "model.safetensors")
    if cfg.dump_replicas:
        save_weights(s.model, s.out / f"replica-{s.rank}.safetensors")
    if s.world > 1:
        dist.barrier()
    return record


def _prepare(cfg: TrainConfig) -> _Session:
    """The seeded model (resumed from the newest checkpoint), optimizer, schedule and data of a run."""
    from zoo.data import dataset_from_spec

    rank, world = rank_and_world()
    out, device = Path(cfg.out), torch.device(cfg.device)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    if world > 1:
        dist.barrier()
    model = _initial_model(cfg, out, rank, device)
    training = _checked_training(cfg, model)
    transforms = training_transforms(model).to(device)
    model.train()
    optimizer = _make_optimizer(cfg, [p for p in model.parameters() if p.requires_grad])
    # a plain function: LambdaLR's state dict then holds no callable state (loads with weights_only=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda at: _lr_factor(cfg, at))
    checkpointer = Checkpointer(out, cfg.keep_checkpoints)
    # keys added to RESUME_KEYS later: an older checkpoint ran with the default
    must_match = {k: getattr(TrainConfig, k, None) for k in TrainConfig.RESUME_KEYS}
    start = checkpointer.resume(model, optimizer, scheduler, _config_dict(cfg), must_match)
    ddp_model = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    base = dataset_from_spec(cfg.data, size=tuple(cfg.size), seed=cfg.seed, split="train", textures=cfg.textures)
    stream = training.stream(base, cfg.seed, tuple(cfg.size), _config_dict(cfg))
    loader = DataLoader(stream, batch_sampler=StepBatchSampler(start, cfg.steps, cfg.batch_size, rank, world),
                        num_workers=cfg.workers, collate_fn=training.collate, generator=torch.Generator().manual_seed(cfg.seed))
    run = TrainingRun(network=model, transforms=transforms, postprocess=model.postprocess, options=_config_dict(cfg),
                      class_weight=_class_weight(cfg, training, stream, model, out, rank))
    eval_set = None
    if cfg.eval_data and cfg.eval_every > 0:
        eval_set = dataset_from_spec(cfg.eval_data, size=tuple(cfg.size), seed=cfg.seed + 10**6, split="val")
    if rank == 0:
        write_atomic(out / "config.json", json.dumps(_config_dict(cfg), indent=2) + "\n")
    return _Session(cfg, out, device, rank, world, model, ddp_model, training, run, optimizer, scheduler,
                    checkpointer, loader, start, eval_set)


def _initial_model(cfg: TrainConfig, out: Path, rank: int, device: torch.device) -> nn.Module:
    """The registry model, seeded the same on every rank, from registry weights, a file or a warm start."""
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    pretrained: bool | str = False
    if cfg.pretrained:
        pretrained = True if cfg.pretrained == "default" else cfg.pretrained
    model = load_model(cfg.model, pretrained=pretrained, checkpoint=cfg.init_checkpoint,
                       arch_overrides=cfg.arch_overrides, num_classes=cfg.num_classes, device=device)
    if cfg.warm_start:
        report = warm_start(model, cfg.warm_start)
        if rank == 0:
            write_atomic(out / "warm_start.json", json.dumps(report, indent=2) + "\n")
    return model


def _checked_training(cfg: TrainConfig, model: nn.Module) -> Training:
    """The :class:`Training` of the model's task, after checking that ``cfg`` suits it."""
    task = model.info.task
    training = _training(task)
    if cfg.size[0] % training.crop_multiple or cfg.size[1] % training.crop_multiple:
        raise ValueError(f"{task} training crops must be multiples of {training.crop_multiple} "
                         f"(the network's stride), got {tuple(cfg.size)}")
    if cfg.temperature_anneal > 0 and set_temperature(model, 1.0) == 0:
        raise ValueError(f"temperature_anneal: {cfg.model!r} has no DyConv2d layer")
    if cfg.class_weights not in ("none", "median-frequency"):
        raise ValueError(f"--class-weights must be 'none' or 'median-frequency', got {cfg.class_weights!r}")
    if cfg.class_weights != "none" and training.class_weights is None:
        raise ValueError(f"--class-weights applies to semantic segmentation, not {task}")
    return training


def _class_weight(cfg: TrainConfig, training: Training, stream: Dataset, model: nn.Module, out: Path,
                  rank: int) -> torch.Tensor | None:
    """The per-class loss weights ``--class-weights`` asks for (written to class_weights.json), or None."""
    if cfg.class_weights == "none":
        return None
    weight = training.class_weights(stream, cfg.num_classes or model.info.args["num_classes"])
    weight = weight.to(next(model.parameters()).device)
    if rank == 0:
        write_atomic(out / "class_weights.json", json.dumps([round(float(v), 6) for v in weight]) + "\n")
    return weight


def _temperature(cfg: TrainConfig, step: int) -> float:
    """The DyConv2d attention temperature before ``step`` (the module docstring's annealing)."""
    return temperature_schedule(step, cfg.temperature_start, 1.0, cfg.temperature_anneal)


def _on_any_rank(flag: bool, world: int) -> bool:
    """``flag`` of any rank (every rank must call it)."""
    value = torch.tensor([float(flag)])
    if world > 1:
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _record(s: _Session, step: int, loss: torch.Tensor, metric: torch.Tensor, seconds: float) -> dict[str, Any]:
    """The log record of ``step``: loss and metric averaged over the ranks, lr, speed, temperature, eval."""
    cfg = s.cfg
    values = torch.stack([loss.detach().float().cpu(), metric.detach().float().cpu()])
    if s.world > 1:
        dist.all_reduce(values)
        values /= s.world
    record = {"step": step, "loss": float(values[0]), s.training.metric: float(values[1]),
              "lr": s.optimizer.param_groups[0]["lr"], "sec_per_step": seconds,
              "samples_per_sec": cfg.batch_size / seconds if seconds > 0 else None, "time": time.time()}
    if cfg.temperature_anneal > 0:   # the DyConv2d temperature of the step just taken
        record["temperature"] = _temperature(cfg, step - 1)
    if s.eval_set is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
        result = evaluate(s.model, s.eval_set, s.model.info.task, device=s.device)
        s.model.train()
        record["eval"] = {k: v for k, v in result.items() if k not in ("per_pair", "confusion", "iou", "per_image")}
    return record


def _write_record(record: dict[str, Any], log: Any, bar: Any, metric: str) -> None:
    if log is not None:
        log.write(json.dumps(record) + "\n")
        log.flush()
    if bar is not None:
        bar.set_postfix(loss=f"{record['loss']:.3g}", **{metric: f"{record[metric]:.3g}"})


def _progress_bar(cfg: TrainConfig, start: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=cfg.steps, initial=start, desc=cfg.model, unit="step", dynamic_ncols=True,
                mininterval=0.5 if sys.stderr.isatty() else 30.0)


# ------------------------------------------------------------------------------------------- CLI
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
