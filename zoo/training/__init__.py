"""Training of registry models, single process or ``torchrun`` with DistributedDataParallel, with exact
resume. ``scripts/train.py`` is a thin CLI over :func:`main`. The loop is :mod:`zoo.training.loop`, the
command line (:func:`build_parser`, :func:`main`) :mod:`zoo.training.cli`.

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

from zoo.checkpoints import average_checkpoints, warm_start
from zoo.data.positions import PositionStream
from zoo.training.cli import build_parser, main
from zoo.training.loop import TrainConfig, recompute_batchnorm, train, training_transforms

# The tasks' losses and streams, re-exported where they used to live.
from zoo.tasks.image_classification import ClassificationStream  # noqa: E402
from zoo.tasks.optical_flow import FLOWNET_WEIGHTS, FlowStream, full_res_epe, multiscale_epe_loss  # noqa: E402
from zoo.tasks.semantic_segmentation import median_frequency_weights, segmentation_loss  # noqa: E402

__all__ = ["TrainConfig", "train", "average_checkpoints", "recompute_batchnorm", "main", "build_parser", "warm_start",
           "training_transforms", "PositionStream", "ClassificationStream", "FlowStream", "FLOWNET_WEIGHTS",
           "multiscale_epe_loss", "full_res_epe", "segmentation_loss", "median_frequency_weights"]
