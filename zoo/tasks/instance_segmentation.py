"""Instance segmentation: object detection whose detections carry masks (Mask R-CNN, CondInst).

It shares with :mod:`zoo.tasks.object_detection` the ``detection`` presets (the postprocess binarises the
masks), COCO evaluation (``segm`` mask AP beside ``bbox`` when the detections carry masks) and ``zoo
predict`` (the masks are drawn under the boxes); the name and the headline metric differ, and it trains.

Training (``scripts/train.py --data coco:PATH[@annotations.json]``), for detectors that take targets in
training mode and return a dict of losses with a ``loss_mask``, as torchvision's detectors (CondInst,
:mod:`zoo.models.condinst`, is the one the tests train; torchvision's Mask R-CNN has the same interface):

- :class:`InstanceStream`: sample position p reads image ``permutation_epoch[p mod n]`` of a
  :class:`zoo.data.CocoDetection` (the order of :class:`zoo.data.positions.PositionStream`) with its
  boxes, category ids and instance masks (:meth:`~zoo.data.CocoDetection.instance_masks`); crowd
  annotations and instances with an empty box or mask are dropped (detectron2's dataset mapper and
  ``filter_empty_instances``). Images keep their size (the detector resizes them itself, so ``--size``
  does not apply); ``hflip`` = q > 0 flips image, boxes and masks left-right with probability q, seeded
  by (seed, p) (AdelaiDet trains with 0.5).
- :func:`collate_instances`: a batch pads images (zeros) and masks (False) bottom-right to the largest
  image and the instances to the largest count; ``image_size`` (B, 2) and ``num_instances`` (B,) say what
  is real, so the training step gives the detector each image and target at its own size.
- The step: ``model(transforms(images), targets)`` with targets ``{"boxes", "labels", "masks"}``, the loss
  the sum of the returned losses (detectron2's and torchvision's), logged metric ``loss_mask`` (CondInst's
  dice loss, 1 - the mean dice coefficient of the instances its mask head trained on).
"""
from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from zoo.data.positions import PositionStream
from zoo.data.shapes import sample_seed
from zoo.errors import InputError
from zoo.tasks.base import Training, TrainingRun
from zoo.tasks.object_detection import MASKS_TASK, OBJECT_DETECTION

__all__ = ["INSTANCE_SEGMENTATION", "InstanceStream", "collate_instances", "batch_targets"]

FLIP_SALT = 0x5DEECE66D  # keeps the flip draw apart from other draws seeded by (seed, p)


class InstanceStream(PositionStream):
    """Sample position p -> ``{"image", "boxes" (N, 4), "labels" (N,) category ids, "masks" (N, H, W)
    bool}`` of a COCO dataset (module docstring); ``hflip`` is the flip probability."""

    def __init__(self, base: Dataset, seed: int, hflip: float = 0.0) -> None:
        if not hasattr(base, "instance_masks"):
            raise InputError("instance segmentation training reads COCO instances (spec "
                             f"coco:PATH[@annotations.json]); {type(base).__name__} has no instance masks")
        if not 0.0 <= hflip <= 1.0:
            raise ValueError(f"hflip (--hflip) must be a probability in [0, 1], got {hflip}")
        super().__init__(base, seed, None)
        self.hflip = float(hflip)

    def __getitem__(self, p: int) -> dict:
        i = self.index(p)
        sample = self.base[i]
        masks = self.base.instance_masks(i)
        boxes = sample["boxes"]
        keep = ~sample["iscrowd"] & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & masks.flatten(1).any(1)
        image, boxes, labels, masks = sample["image"], boxes[keep], sample["labels"][keep], masks[keep]
        if self.hflip > 0 and random.Random(sample_seed(self.seed, p) ^ FLIP_SALT).random() < self.hflip:
            width = image.shape[-1]
            image, masks = image.flip(-1), masks.flip(-1)
            boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)
        return {"image": image, "boxes": boxes, "labels": labels, "masks": masks}

    def __getitems__(self, positions: Sequence[int]) -> list[dict]:
        return [self[p] for p in positions]


def collate_instances(samples: list[dict]) -> dict[str, Tensor]:
    """Samples of :class:`InstanceStream` -> one padded batch (module docstring): ``image`` (B, 3, H, W),
    ``image_size`` (B, 2), ``boxes`` (B, N, 4), ``labels`` (B, N), ``masks`` (B, N, H, W), ``num_instances`` (B,)."""
    b = len(samples)
    h = max(s["image"].shape[-2] for s in samples)
    w = max(s["image"].shape[-1] for s in samples)
    n = max(len(s["labels"]) for s in samples)
    first = samples[0]
    out = {"image": first["image"].new_zeros(b, first["image"].shape[0], h, w),
           "image_size": torch.tensor([list(s["image"].shape[-2:]) for s in samples], dtype=torch.int64),
           "boxes": first["boxes"].new_zeros(b, n, 4), "labels": first["labels"].new_zeros(b, n),
           "masks": torch.zeros(b, n, h, w, dtype=torch.bool),
           "num_instances": torch.tensor([len(s["labels"]) for s in samples], dtype=torch.int64)}
    for i, s in enumerate(samples):
        (sh, sw), k = s["image"].shape[-2:], len(s["labels"])
        out["image"][i, :, :sh, :sw] = s["image"]
        out["boxes"][i, :k], out["labels"][i, :k] = s["boxes"], s["labels"]
        out["masks"][i, :k, :sh, :sw] = s["masks"]
    return out


def batch_targets(batch: Mapping[str, Tensor]) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """A :func:`collate_instances` batch -> the images at their own sizes and one target dict per image."""
    images, targets = [], []
    for i, ((h, w), k) in enumerate(zip(batch["image_size"].tolist(), batch["num_instances"].tolist())):
        images.append(batch["image"][i, :, :h, :w])
        targets.append({"boxes": batch["boxes"][i, :k], "labels": batch["labels"][i, :k],
                        "masks": batch["masks"][i, :k, :h, :w]})
    return images, targets


def _stream(base: Dataset, seed: int, size: tuple[int, int], options: Mapping[str, Any]) -> Dataset:
    return InstanceStream(base, seed, options.get("hflip", 0.0))


def _training_step(model: nn.Module, batch: Mapping[str, Tensor], run: TrainingRun) -> tuple[Tensor, Tensor]:
    images, targets = batch_targets(batch)
    losses = model(run.transforms(images), targets)
    loss = sum(losses.values())
    return loss, losses["loss_mask"].detach()


INSTANCE_SEGMENTATION = dataclasses.replace(
    OBJECT_DETECTION,
    name=MASKS_TASK,
    headline_metrics=("mask AP", "mask_ap", "AP"),
    pipeline_tag="image-segmentation",
    metrics=("bbox", "segm", "detections"),
    training=Training(step=_training_step, metric="loss_mask", stream=_stream, collate=collate_instances),
)
