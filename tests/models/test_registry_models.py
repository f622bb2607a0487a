"""Every registry entry: builds on the meta device, runs a forward on a small input, and exports where
the registry says it is exportable. (Cards and metadata: tests/test_cards.py, tests/test_registry.py.)"""
from __future__ import annotations

import pytest
import torch

import zoo
from zoo.factory import build_model, example_inputs
from zoo.registry import default_registry

ENTRIES = [info.name for info in default_registry()]
SMOKE_SIZE = (64, 64)  # a multiple of 64 (FlowNet) and large enough for output stride 32
DETECTION = ("object-detection", "instance-segmentation")


@pytest.mark.parametrize("name", ENTRIES)
def test_builds_on_meta_device(name):
    info = zoo.model_info(name)
    with torch.device("meta"):
        model = build_model(info)
    assert sum(p.numel() for p in model.parameters()) > 0
    assert all(p.is_meta for p in model.parameters())


@pytest.mark.parametrize("name", ENTRIES)
def test_forward_and_export_on_a_small_input(name):
    info = zoo.model_info(name)
    torch.manual_seed(0)
    small = {"min_size": SMOKE_SIZE[0], "max_size": SMOKE_SIZE[1]} if info.task in DETECTION else {}
    model = zoo.create(name, **small)  # detectors resize internally: keep them at the smoke size
    assert not model.training
    inputs = example_inputs(info, SMOKE_SIZE)
    with torch.no_grad():
        out = model(*inputs)
    if isinstance(out, list) and out and isinstance(out[0], dict):  # torchvision detection: one dict per image
        assert set(out[0]) >= {"boxes", "scores", "labels"}
        tensors = [v for d in out for v in d.values()]
    else:
        tensors = [out] if isinstance(out, torch.Tensor) else list(out.values()) if isinstance(out, dict) else list(out)
        assert tensors
    assert all(torch.isfinite(t.float()).all() for t in tensors if isinstance(t, torch.Tensor))
    if info.exportable:
        exported = torch.export.export(model, inputs)
        with torch.no_grad():
            again = exported.module()(*inputs)
        first = tensors[0]
        second = again if isinstance(again, torch.Tensor) else next(iter(again.values())) if isinstance(again, dict) else again[0]
        torch.testing.assert_close(second, first, rtol=1e-4, atol=1e-4)
