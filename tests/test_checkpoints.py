"""zoo.checkpoints.Checkpointer: saving keeps the newest files, resuming restores model, optimizer and RNG."""
from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from zoo.checkpoints import Checkpointer, save_weights, unwrap_model


def _parts(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return model, optimizer, scheduler


def test_save_keeps_the_newest(tmp_path):
    checkpointer = Checkpointer(tmp_path, keep=2)
    model, optimizer, scheduler = _parts()
    for step in (1, 2, 3):
        checkpointer.save(step, model, optimizer, scheduler, {"seed": 0})
    assert [p.name for p in checkpointer.paths()] == ["checkpoint-0000002.pt", "checkpoint-0000003.pt"]


def test_resume_restores_weights_step_and_rng(tmp_path):
    checkpointer = Checkpointer(tmp_path)
    assert checkpointer.resume(*_parts(), {"seed": 0}, {"seed": None}) == 0    # nothing to resume
    model, optimizer, scheduler = _parts(0)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    random.seed(7)
    checkpointer.save(5, model, optimizer, scheduler, {"seed": 0})
    expected_torch, expected_python = torch.rand(3), random.random()
    fresh, fresh_optimizer, fresh_scheduler = _parts(1)
    assert checkpointer.resume(fresh, fresh_optimizer, fresh_scheduler, {"seed": 0}, {"seed": None}) == 5
    torch.testing.assert_close(fresh.state_dict(), model.state_dict())
    assert fresh_optimizer.state_dict()["state"].keys() == optimizer.state_dict()["state"].keys()
    torch.testing.assert_close(torch.rand(3), expected_torch)
    assert random.random() == expected_python


def test_resume_refuses_another_run(tmp_path):
    checkpointer = Checkpointer(tmp_path)
    checkpointer.save(1, *_parts(), {"seed": 0, "batch_size": 8})
    with pytest.raises(ValueError, match=r"different batch_size \(batch_size=8\); use another --out"):
        checkpointer.resume(*_parts(), {"seed": 0, "batch_size": 4}, {"seed": None, "batch_size": None})
    # a key the old checkpoint lacks counts as its default
    assert checkpointer.resume(*_parts(), {"seed": 0, "batch_size": 8, "new": "x"},
                               {"seed": None, "batch_size": None, "new": "x"}) == 1


def test_average_of_two_checkpoints(tmp_path):
    checkpointer = Checkpointer(tmp_path, keep=5)
    models = [_parts(seed)[0] for seed in (0, 1)]
    for step, model in enumerate(models, 1):
        checkpointer.save(step, model, *_parts()[1:], {})
    mean = Checkpointer.average(checkpointer.paths())
    torch.testing.assert_close(mean["weight"], (models[0].weight + models[1].weight).detach() / 2)


def test_save_weights_unwraps(tmp_path):
    from safetensors.torch import load_file

    model = _parts()[0]
    assert unwrap_model(model) is model
    save_weights(model, tmp_path / "model.safetensors")
    assert set(load_file(tmp_path / "model.safetensors")) == {"weight", "bias"}
