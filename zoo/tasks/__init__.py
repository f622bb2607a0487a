"""The tasks zoo knows, one module each (``zoo/tasks/<task>.py`` defines one :class:`Task`).

:data:`TASKS` lists them in the order the registry, ``zoo list`` and the site show them; :func:`get_task`
finds one by the name a registry entry's ``task`` gives. Importing this package imports every task, so
their presets exist for :mod:`zoo.transforms` without any model importing a task.
"""
from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from zoo.tasks.base import Predict, Task, Training, TrainingRun
from zoo.tasks.image_classification import IMAGE_CLASSIFICATION
from zoo.tasks.instance_segmentation import INSTANCE_SEGMENTATION
from zoo.tasks.object_detection import OBJECT_DETECTION
from zoo.tasks.optical_flow import OPTICAL_FLOW
from zoo.tasks.salient_object_detection import SALIENT_OBJECT_DETECTION
from zoo.tasks.semantic_segmentation import SEMANTIC_SEGMENTATION
from zoo.tasks.video_prediction import VIDEO_PREDICTION

__all__ = ["TASKS", "TASK_NAMES", "Task", "Training", "TrainingRun", "Predict", "get_task", "transform_presets",
           "postprocess_presets", "IMAGE_CLASSIFICATION", "INSTANCE_SEGMENTATION", "OBJECT_DETECTION", "OPTICAL_FLOW",
           "SALIENT_OBJECT_DETECTION", "SEMANTIC_SEGMENTATION", "VIDEO_PREDICTION"]

TASKS: tuple[Task, ...] = (
    SEMANTIC_SEGMENTATION,
    OPTICAL_FLOW,
    IMAGE_CLASSIFICATION,
    OBJECT_DETECTION,
    INSTANCE_SEGMENTATION,
    SALIENT_OBJECT_DETECTION,
    VIDEO_PREDICTION,
)
TASK_NAMES: tuple[str, ...] = tuple(task.name for task in TASKS)
_BY_NAME = {task.name: task for task in TASKS}


def get_task(name: str) -> Task:
    """The task called ``name``; ValueError naming the known tasks otherwise."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; tasks: {', '.join(TASK_NAMES)}") from None


def _presets(field: str) -> dict[str, type[nn.Module]]:
    table: dict[str, type[nn.Module]] = {}
    for task in TASKS:
        presets: Mapping[str, type[nn.Module]] = getattr(task, field)
        for name, cls in presets.items():
            if table.setdefault(name, cls) is not cls:
                raise ValueError(f"{field} preset {name!r} is defined by two tasks with different classes")
    return table


def transform_presets() -> dict[str, type[nn.Module]]:
    """Every task's transforms presets: registry preset name -> nn.Module class."""
    return _presets("transforms")


def postprocess_presets() -> dict[str, type[nn.Module]]:
    """Every task's postprocess presets: registry preset name -> nn.Module class."""
    return _presets("postprocess")
