"""The training loop of :mod:`zoo.training` (its docstring says what a run does): :class:`TrainConfig`,
:func:`train`, :func:`training_transforms` and :func:`recompute_batchnorm`."""
from __future__ import annotations

import dataclasses
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from zoo.io import write_atomic
from zoo.checkpoints import Checkpointer, save_weights, warm_start
from zoo.data.positions import StepBatchSampler
from zoo.distributed import rank_and_world
from zoo.evaluation import evaluate, load_model
from zoo.ops.dy_conv import set_temperature, temperature_schedule
from zoo.registry import Preset, thaw
from zoo.tasks import TASKS, Training, TrainingRun, get_task
from zoo.transforms import build_transforms

__all__ = ["TrainConfig", "recompute_batchnorm", "train", "training_transforms"]


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
