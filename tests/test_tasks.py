"""zoo.tasks: the task table agrees with the registry, and the worked example of CONTRIBUTING.md runs."""
from __future__ import annotations

import dataclasses
import re
import types
from pathlib import Path

import pytest
import torch
from torch import nn

import zoo
from zoo.registry import TASKS as REGISTRY_TASKS
from zoo.tasks import TASK_NAMES, TASKS, Task, get_task, postprocess_presets, transform_presets

ROOT = Path(__file__).resolve().parents[1]


def test_the_registry_knows_exactly_the_tasks():
    assert REGISTRY_TASKS == TASK_NAMES and len(set(TASK_NAMES)) == len(TASKS)
    assert all(get_task(t.name) is t for t in TASKS)
    with pytest.raises(ValueError, match="unknown task 'depth'; tasks: semantic-segmentation, optical-flow"):
        get_task("depth")


def test_every_entry_uses_presets_of_its_own_task():
    for name in zoo.list_models():
        info = zoo.model_info(name)
        task = get_task(info.task)
        assert info.transforms.preset in task.transforms, (name, info.transforms.preset)
        assert info.postprocess.preset in task.postprocess, (name, info.postprocess.preset)
        for tag in info.weights:
            assert info.transforms_for(tag).preset in task.transforms, (name, tag)


def test_preset_tables_cover_every_task():
    transforms, postprocess = transform_presets(), postprocess_presets()
    for task in TASKS:
        assert all(transforms[k] is v for k, v in task.transforms.items())
        assert all(postprocess[k] is v for k, v in task.postprocess.items())


def test_tasks_without_an_evaluator_say_so():
    bare = dataclasses.replace(get_task("video-prediction"), evaluator=None, training=None, predict=None)
    with pytest.raises(ValueError, match="no evaluation for task 'video-prediction'"):
        bare.evaluate(nn.Identity(), [])


def _contributing_example() -> types.ModuleType:
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    section = text.split("## A task (`zoo/tasks/<task>.py`)", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    module = types.ModuleType("depth_estimation")
    exec(compile(code, "CONTRIBUTING.md (depth_estimation)", "exec"), module.__dict__)  # noqa: S102
    return module


def test_the_worked_example_of_a_new_task_runs():
    example = _contributing_example()
    task = example.DEPTH_ESTIMATION
    assert isinstance(task, Task) and task.name == "depth-estimation" and task.training is None
    torch.manual_seed(0)
    model = nn.Conv2d(3, 1, 3, padding=1).eval()
    object.__setattr__(model, "transforms", task.transforms["depth"]())
    object.__setattr__(model, "postprocess", task.postprocess["depth"]())
    data = [{"image": torch.rand(3, 8, 10), "depth": torch.rand(8, 10) + 0.5} for _ in range(3)]
    result = task.evaluate(model, data, num_classes=None)        # options the evaluator does not take are dropped
    assert result["images"] == 3 and result["abs_rel"] > 0 and len(result["per_image"]) == 3
    with torch.inference_mode():                                  # as zoo predict runs it
        picture, summary = task.predict.draw(model, [torch.randint(0, 256, (3, 8, 10), dtype=torch.uint8)], None)
    assert picture.shape == (8, 10) and picture.dtype == torch.uint8 and "max_depth" in summary
    assert task.example_inputs(torch.zeros, 2, [3], 8, 10)[0].shape == (2, 3, 8, 10)
