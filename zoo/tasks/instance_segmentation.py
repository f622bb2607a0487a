"""Instance segmentation: object detection whose detections carry masks (Mask R-CNN, CondInst).

It shares everything with :mod:`zoo.tasks.object_detection`: the ``detection`` presets (the postprocess
binarises the masks), COCO evaluation (``segm`` mask AP beside ``bbox`` when the detections carry masks)
and ``zoo predict`` (the masks are drawn under the boxes). Only the name and the headline metric differ.
"""
from __future__ import annotations

import dataclasses

from zoo.tasks.object_detection import MASKS_TASK, OBJECT_DETECTION

__all__ = ["INSTANCE_SEGMENTATION"]

INSTANCE_SEGMENTATION = dataclasses.replace(
    OBJECT_DETECTION,
    name=MASKS_TASK,
    headline_metrics=("mask AP", "mask_ap", "AP"),
    pipeline_tag="image-segmentation",
    metrics=("bbox", "segm", "detections"),
)
