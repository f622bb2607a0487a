"""Training of registry models: optical flow (FlowNet multi-scale EPE), semantic segmentation
(cross-entropy) and image classification (cross-entropy), single process or ``torchrun`` with
DistributedDataParallel, with exact resume.
``scripts/train.py`` is a thin CLI over :func:`main`.

The model is always the registry architecture: ``zoo.create(name, **arch_overrides)`` (optionally with
registry weights or a checkpoint), then ``.train()``; no model is defined here. Inputs go through the
entry's transforms preset (for segmentation without its ``resize``, which would misalign the labels;
for classification the whole preset, as evaluation applies it).

Losses:
- optical flow: FlowNet's multi-scale loss (Dosovitskiy et al. 2015; as FlowNetPytorch's
  ``multiscaleEPE``): the target divided by ``div_flow`` (20) is area-downsampled to each prediction
  (flow2..flow6), the per-pixel EPE is summed over the pixels (``flow_reduction="sum"``, FlowNetPytorch)
  or averaged (``"mean"``), averaged over the batch and weighted 0.005, 0.01, 0.02, 0.08, 0.32 for
  flow2..flow6. Pixels with unknown ground truth are left out. The logged ``epe`` is flow2 x div_flow
  upsampled bilinearly to full size against the target (FlowNetPytorch's ``realEPE``).
- segmentation: cross-entropy with ``ignore_index=255`` on logits upsampled bilinearly to the label
  size (torchvision's reference); a DeepLab v3 ``{"out", "aux"}`` output adds ``aux_weight`` (0.5) x the
  aux loss; a DeepLab v2 list of multi-scale logits sums the losses with labels nearest-downsampled to
  each logit size (kazuto1011's MSC training).
- classification: cross-entropy of the logits (B, K) against the integer labels (``{"image", "label"}``
  samples: :class:`zoo.data.Digits`, ImageFolder); the logged metric is the batch's ``top1``. Optional
  augmentation ``augment_shift`` = s: the image is zero-padded by s pixels on every side and cropped back
  to ``size`` at an offset seeded by (seed, p), i.e. a random translation of up to +-s pixels (no flips:
  digits are not mirror-symmetric); images of another size are cropped (or zero-padded) to ``size``
  at that offset.
- optical-flow augmentation: ``photometric`` = s > 0 applies FlowNet's contrast, colour, gamma,
  brightness and noise jitter (:mod:`zoo.data.photometric`) scaled by s to both frames, seeded by (seed, p).

Dynamic Convolution temperature (Chen et al. 2020 anneal the attention softmax temperature of every
DyConv2d linearly from 30 to 1 over the first 10 epochs): ``temperature_anneal`` = n > 0 sets, before
every step s, ``zoo.ops.dy_conv.set_temperature(model, temperature_schedule(s, temperature_start, 1, n))``
(per iteration; 1 from step n on, the inference value). The temperature is a function of the step, so
exact resume holds; a run must reach step n for its weights to match temperature-1 inference.

Data order and exact resume: global sample position ``p = step * batch + j`` (j < global batch) is
rank ``j // (batch / world)``'s; procedural datasets render sample p directly (deterministic per
(seed, p)); finite datasets read a per-epoch permutation seeded by (seed, epoch) and take a random crop
seeded by (seed, p). The data position is therefore the step number. A checkpoint
(``checkpoint-SSSSSSS.pt``, ``torch.save``; loaded with ``weights_only=True``) holds the model,
optimizer, scheduler, step, config and every rank's torch / Python RNG states; training N steps
straight and N/2 + resume + N/2 give bit-identical weights on the same machine and thread count.

DDP: ``torchrun --nproc_per_node N scripts/train.py ...`` (gloo backend; nccl with ``--device cuda``).
The batch size is the GLOBAL batch (each rank takes batch / N), per-rank losses are batch means, so
DDP's gradient average equals the single-process gradient of the same global batch (up to float
summation order; BatchNorm statistics are per rank).

Warm start (``warm_start``): after the seeded initialisation, every tensor whose name and shape match
registry weights ``MODEL.TAG`` or a weights file is copied in (e.g. FlowNetC from FlowNetS weights:
all but conv1, conv3_1 and the redirect conv). A FlowNet with LS-DFN takes the plain FlowNet's weights
whole: the consumers of the LS-DFN channels get zero weights on them, so the run starts from the plain
network's outputs. ``warm_start.json`` lists what was copied, expanded and kept.

Weight averaging (:func:`average_checkpoints`, ``scripts/average_checkpoints.py``): the uniform mean of
the model tensors of several checkpoints of one run (timm's ``avg_checkpoints.py``; SWA, Izmailov et al.
2018, averages the iterates of a constant or cyclic lr phase), written as one safetensors file; for a
network with BatchNorm, :func:`recompute_batchnorm` then gives the average the running statistics of its
own activations (SWA's ``update_bn``: the averaged statistics of the checkpoints are not those).

Outputs in ``out``: ``log.jsonl`` (one JSON object per logged step: step, loss, epe, pixel accuracy or
top1, lr, seconds per step, samples/s, the DyConv2d temperature when annealing; eval results when
``eval_data`` is set), checkpoints,
``model.safetensors`` (final weights, loadable with ``zoo.create(name, checkpoint=..., **overrides)``)
and ``config.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from zoo.data.positions import PositionStream, collate
from zoo.evaluation import evaluate, load_model, parse_overrides
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
           "training_stream", "training_transforms", "network_input", "PositionStream", "ClassificationStream",
           "FlowStream", "FLOWNET_WEIGHTS", "multiscale_epe_loss", "full_res_epe", "segmentation_loss",
           "median_frequency_weights"]


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
    temperature_anneal: int = 0
    temperature_start: float = 30.0
    class_weights: str = "none"

    # fields that must match when resuming (steps, time limit, logging... may change)
    RESUME_KEYS = ("model", "data", "arch_overrides", "num_classes", "batch_size", "size", "optimizer",
                   "seed", "textures", "flow_reduction", "photometric", "class_weights")


# ------------------------------------------------------------------------------------------- data
class StepBatchSampler(Sampler):
    """Per-rank lists of sample positions for steps ``start .. steps - 1`` (see the module docstring)."""

    def __init__(self, start: int, steps: int, batch_size: int, rank: int, world: int) -> None:
        if batch_size % world:
            raise ValueError(f"the global batch size {batch_size} must be divisible by the {world} processes")
        self.start, self.steps, self.batch, self.rank, self.local = start, steps, batch_size, rank, batch_size // world

    def __len__(self) -> int:
        return max(self.steps - self.start, 0)

    def __iter__(self):
        for step in range(self.start, self.steps):
            base = step * self.batch + self.rank * self.local
            yield list(range(base, base + self.local))


def training_stream(task: str, base: Dataset, seed: int, size: tuple[int, int], augment_shift: int = 0,
                    photometric: float = 0.0) -> Dataset:
    """The position stream a run of ``task`` reads ``base`` through (the task's :attr:`Training.stream`)."""
    return _training(task).stream(base, seed, size, {"augment_shift": augment_shift, "photometric": photometric})


def network_input(task: str, transforms: nn.Module, batch: Mapping[str, torch.Tensor]) -> Any:
    """The network input of a collated batch (the task's :attr:`Training.network_input`)."""
    return _training(task).network_input(transforms, batch)


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
    spec = get_task(task).training
    if spec is None:
        trainable = [t.name for t in TASKS if t.training is not None]
        raise ValueError(f"training supports {', '.join(trainable)}; not {task}")
    return spec


# ------------------------------------------------------------------------------------------- helpers
def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuplify(state["python"]))


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def _make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
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


def _checkpoints(out: Path) -> list[Path]:
    return sorted(out.glob("checkpoint-*.pt"))


def _config_dict(cfg: TrainConfig) -> dict:
    d = dataclasses.asdict(cfg)
    return json.loads(json.dumps(d))  # tuples -> lists, plain JSON types


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def save_weights(model: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in _unwrap(model).state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, path)


def average_checkpoints(paths: Sequence[str | Path], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Uniform average of the model tensors in ``paths`` (training ``.pt`` checkpoints, read with
    ``weights_only=True``, or safetensors files), as timm's ``avg_checkpoints.py`` and the weight
    averaging of Izmailov et al. 2018 (SWA) over the last iterates of one run.

    Floating tensors (parameters, BatchNorm running statistics) are averaged in float64 and stored in
    ``dtype`` (default: their own dtype); integer tensors (``num_batches_tracked``) are taken from the
    last file. Every file must hold the same names and shapes; mismatches are listed by name.
    """
    from zoo.errors import StateDictMismatchError, WeightsError
    from zoo.weights import read_state_dict

    paths = [Path(p) for p in paths]
    if not paths:
        raise WeightsError("average_checkpoints needs at least one checkpoint file")
    total: dict[str, torch.Tensor] = {}
    last: dict[str, torch.Tensor] = {}
    reference: dict[str, tuple[int, ...]] = {}
    for path in paths:
        state = read_state_dict(path, allow_pickle=True)
        reference = reference or {k: tuple(v.shape) for k, v in state.items()}
        missing = sorted(set(reference) - set(state))
        unexpected = sorted(set(state) - set(reference))
        shapes = [f"{k}: {tuple(state[k].shape)} vs {reference[k]}"
                  for k in sorted(set(state) & set(reference)) if tuple(state[k].shape) != reference[k]]
        if missing or unexpected or shapes:
            parts = [f"{label} {items}" for label, items in
                     (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)) if items]
            raise StateDictMismatchError(f"cannot average {path} with {paths[0]}: " + "; ".join(parts)
                                         + ". Average checkpoints of one architecture (one training run).")
        for key, value in state.items():
            if value.is_floating_point():
                total[key] = total[key] + value.double() if key in total else value.double()
            last[key] = value
    return {k: (total[k] / len(paths)).to(dtype or v.dtype).contiguous() if k in total else v.clone().contiguous()
            for k, v in last.items()}


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
    task = model.info.task
    device = next(model.parameters()).device
    transforms = training_transforms(model).to(device)
    base = dataset_from_spec(data, size=tuple(size), seed=seed, split="train", textures=textures)
    stream = training_stream(task, base, seed, tuple(size), photometric=photometric)

    def inputs():
        for b in range(batches):
            batch = collate(stream.__getitems__(range(b * batch_size, (b + 1) * batch_size)))
            yield network_input(task, transforms, {k: v.to(device) for k, v in batch.items()})

    torch.optim.swa_utils.update_bn(inputs(), model)
    return len(norms)


# ------------------------------------------------------------------------------------------- training
def train(cfg: TrainConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) a training run; returns the last logged record. See the module docstring."""
    from zoo.data import dataset_from_spec

    rank, world = _dist_info()
    out = Path(cfg.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    if world > 1:
        dist.barrier()
    device = torch.device(cfg.device)

    torch.manual_seed(cfg.seed)          # the same init on every rank
    random.seed(cfg.seed)
    pretrained: bool | str = False
    if cfg.pretrained:
        pretrained = True if cfg.pretrained == "default" else cfg.pretrained
    model = load_model(cfg.model, pretrained=pretrained, checkpoint=cfg.init_checkpoint,
                       arch_overrides=cfg.arch_overrides, num_classes=cfg.num_classes, device=device)
    if cfg.warm_start:
        report = warm_start(model, cfg.warm_start)
        if rank == 0:
            (out / "warm_start.json").write_text(json.dumps(report, indent=2) + "\n")
    info = model.info
    task = info.task
    spec = get_task(task).training
    if spec is None:
        trainable = [t.name for t in TASKS if t.training is not None]
        raise ValueError(f"{cfg.model!r} is a {task} model; training supports {', '.join(trainable)}")
    transforms = training_transforms(model).to(device)
    postprocess = model.postprocess
    if cfg.size[0] % spec.crop_multiple or cfg.size[1] % spec.crop_multiple:
        raise ValueError(f"{task} training crops must be multiples of {spec.crop_multiple} "
                         f"(the network's stride), got {tuple(cfg.size)}")
    if cfg.temperature_anneal > 0:
        def anneal(at: int) -> None:
            set_temperature(model, temperature_schedule(at, cfg.temperature_start, 1.0, cfg.temperature_anneal))

        if set_temperature(model, 1.0) == 0:
            raise ValueError(f"temperature_anneal: {cfg.model!r} has no DyConv2d layer")
    model.train()

    optimizer = _make_optimizer(cfg, [p for p in model.parameters() if p.requires_grad])
    # a plain function: LambdaLR's state dict then holds no callable state (loads with weights_only=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(cfg, s))
    start = 0
    found = _checkpoints(out)
    if found:
        ckpt = torch.load(found[-1], map_location=device, weights_only=True)
        old = ckpt["config"]
        new = _config_dict(cfg)
        diff = [k for k in TrainConfig.RESUME_KEYS  # keys added later: an old checkpoint ran with the default
                if old.get(k, getattr(TrainConfig, k, None)) != new.get(k)]
        if diff:
            raise ValueError(f"{found[-1]} was written by a run with different {', '.join(diff)} "
                             f"({', '.join(f'{k}={old.get(k)!r}' for k in diff)}); use another --out")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start = int(ckpt["step"])
        states = ckpt["rng"]
        _set_rng_state(states[rank] if len(states) == world else states[0])
    if world > 1:
        ddp_model: nn.Module = nn.parallel.DistributedDataParallel(model)
    else:
        ddp_model = model

    base = dataset_from_spec(cfg.data, size=tuple(cfg.size), seed=cfg.seed, split="train", textures=cfg.textures)
    stream = training_stream(task, base, cfg.seed, tuple(cfg.size), cfg.augment_shift, cfg.photometric)
    sampler = StepBatchSampler(start, cfg.steps, cfg.batch_size, rank, world)
    loader = DataLoader(stream, batch_sampler=sampler, num_workers=cfg.workers, collate_fn=collate,
                        generator=torch.Generator().manual_seed(cfg.seed))
    class_weight = None
    if cfg.class_weights == "median-frequency":
        if spec.class_weights is None:
            raise ValueError(f"--class-weights applies to semantic segmentation, not {task}")
        class_weight = spec.class_weights(stream, cfg.num_classes or info.args["num_classes"]).to(device)
        if rank == 0:
            (out / "class_weights.json").write_text(json.dumps([round(float(v), 6) for v in class_weight]) + "\n")
    elif cfg.class_weights != "none":
        raise ValueError(f"--class-weights must be 'none' or 'median-frequency', got {cfg.class_weights!r}")
    run = TrainingRun(network=model, transforms=transforms, postprocess=postprocess, options=_config_dict(cfg),
                      class_weight=class_weight)
    eval_set = None
    if cfg.eval_data and cfg.eval_every > 0:
        eval_set = dataset_from_spec(cfg.eval_data, size=tuple(cfg.size), seed=cfg.seed + 10**6, split="val")

    if rank == 0:
        (out / "config.json").write_text(json.dumps(_config_dict(cfg), indent=2) + "\n")
    log = (out / "log.jsonl").open("a") if rank == 0 else None
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc=cfg.model, unit="step", dynamic_ncols=True,
                   mininterval=0.5 if sys.stderr.isatty() else 30.0)

    def save(step: int) -> None:
        states = [_rng_state()]
        if world > 1:
            gathered: list = [None] * world
            dist.all_gather_object(gathered, states[0])
            states = gathered
        if rank == 0:
            ckpt = {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "rng": states, "config": _config_dict(cfg)}
            path = out / f"checkpoint-{step:07d}.pt"
            tmp = path.with_suffix(".tmp")
            torch.save(ckpt, tmp)
            os.replace(tmp, path)
            for old in _checkpoints(out)[:-max(cfg.keep_checkpoints, 1)]:
                old.unlink()

    record: dict[str, Any] = {}
    step = start
    t_last, steps_since = time.perf_counter(), 0
    t_begin = time.perf_counter()
    try:
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            if cfg.temperature_anneal > 0:
                anneal(step)
            loss, metric = spec.step(ddp_model, batch, run)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            steps_since += 1
            if bar is not None:
                bar.update(1)
            stop = False
            if cfg.time_limit is not None:
                flag = torch.tensor([float(time.perf_counter() - t_begin > cfg.time_limit)])
                if world > 1:
                    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                stop = bool(flag.item())
            if step % cfg.log_every == 0 or step == cfg.steps or stop:
                vals = torch.stack([loss.detach().float().cpu(), metric.detach().float().cpu()])
                if world > 1:
                    dist.all_reduce(vals)
                    vals /= world
                now = time.perf_counter()
                sec = (now - t_last) / max(steps_since, 1)
                record = {"step": step, "loss": float(vals[0]), spec.metric: float(vals[1]),
                          "lr": optimizer.param_groups[0]["lr"], "sec_per_step": sec,
                          "samples_per_sec": cfg.batch_size / sec if sec > 0 else None, "time": time.time()}
                if cfg.temperature_anneal > 0:   # the DyConv2d temperature of the step just taken
                    record["temperature"] = temperature_schedule(step - 1, cfg.temperature_start, 1.0,
                                                                 cfg.temperature_anneal)
                t_last, steps_since = now, 0
                if eval_set is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
                    res = evaluate(model, eval_set, task, device=device)
                    model.train()
                    record["eval"] = {k: v for k, v in res.items()
                                      if k not in ("per_pair", "confusion", "iou", "per_image")}
                if log is not None:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                if bar is not None:
                    bar.set_postfix(loss=f"{record['loss']:.3g}", **{spec.metric: f"{record[spec.metric]:.3g}"})
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or stop:
                save(step)
            if stop:
                break
    finally:
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()
    if rank == 0:
        save_weights(model, out / "model.safetensors")
    if cfg.dump_replicas:
        save_weights(model, out / f"replica-{rank}.safetensors")
    if world > 1:
        dist.barrier()
    return record


# ------------------------------------------------------------------------------------------- CLI
def warm_start(model: nn.Module, source: str) -> dict[str, Any]:
    """Copy into ``model`` every tensor of ``source`` whose name and shape match; return what was done.

    ``source``: ``MODEL.TAG`` (registry weights, resolved like ``zoo.create(MODEL, pretrained=TAG)``)
    or a weights file (safetensors, or a training checkpoint ``.pt`` read with ``weights_only=True``).
    The copy is :func:`zoo.weights.expand_state_dict` (plain FlowNet weights fill a FlowNet with LS-DFN,
    zero on the inserted channels); its report lists the copied, expanded and kept keys and the parameter
    counts, so a card can say how much of the model was warm-started.
    """
    from zoo.factory import create
    from zoo.weights import expand_state_dict, read_state_dict

    path = Path(source)
    if path.exists():
        theirs = read_state_dict(path, allow_pickle=path.suffix in (".pt", ".pth", ".ckpt"))
    else:
        name, dot, tag = source.rpartition(".")
        if not dot or not name:
            raise ValueError(f"warm start {source!r}: neither a file nor MODEL.TAG registry weights "
                             "(e.g. flownets-small.flyingshapes-28250)")
        theirs = create(name, pretrained=tag).state_dict()
    return expand_state_dict(model, theirs, source=source)


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig(model="", out="")
    p = argparse.ArgumentParser(
        prog="train.py", description="Train a zoo registry model (optical flow, segmentation or classification).",
        epilog="Data specs: flying-shapes[:N][?KEY=VALUE&...], shapes[:N], shapes-flat[:N], flyingchairs:PATH[@train], voc:PATH[@train], "
               "digits[@train], imagefolder:PATH. "
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
    cfg = TrainConfig(
        model=args.model, out=args.out, data=args.data, arch_overrides=parse_overrides(args.arch_override),
        num_classes=args.num_classes, pretrained=args.pretrained, init_checkpoint=args.init_checkpoint,
        warm_start=args.warm_start,
        steps=args.steps, batch_size=args.batch_size, size=tuple(args.size), optimizer=args.optimizer,
        lr=args.lr, weight_decay=args.weight_decay, momentum=args.momentum, schedule=args.schedule,
        milestones=tuple(args.milestones), gamma=args.gamma, warmup=args.warmup, max_grad_norm=args.max_grad_norm,
        flow_reduction=args.flow_reduction, aux_weight=args.aux_weight, seed=args.seed, textures=args.textures,
        workers=args.workers, checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints,
        log_every=args.log_every, eval_data=args.eval_data, eval_every=args.eval_every,
        time_limit=args.time_limit, device=args.device, dump_replicas=args.dump_replicas,
        augment_shift=args.augment_shift, photometric=args.photometric, temperature_anneal=args.temperature_anneal,
        temperature_start=args.temperature_start, class_weights=args.class_weights,
    )
    started = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cfg.device.startswith("cuda") else "gloo")
        started = True
    try:
        record = train(cfg, progress=not args.no_progress)
        if _dist_info()[0] == 0:
            print(json.dumps(record))
        return record
    finally:
        if started:
            dist.destroy_process_group()
