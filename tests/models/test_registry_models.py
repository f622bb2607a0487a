"""Every registry entry: builds on the meta device, runs a forward on a small input, and exports where
the registry says it is exportable. (Cards and metadata: tests/test_cards.py, tests/test_registry.py.)"""
from __future__ import annotations

import pytest
import torch
from torch.utils._pytree import tree_flatten

import zoo
from zoo.export import raw_example_inputs
from zoo.factory import build_model, example_inputs
from zoo.registry import default_registry
from zoo.tasks import get_task

ENTRIES = [info.name for info in default_registry()]
SMOKE_SIZE = (64, 64)  # a multiple of 64 (FlowNet) and large enough for output stride 32



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
    small = {"min_size": SMOKE_SIZE[0], "max_size": SMOKE_SIZE[1]} if get_task(info.task).detector else {}
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
        # In float64: the exported graph may trace another formulation of an op (zoo/ops: export paths), whose
        # float32 rounding differs; through 100 random-init layers (activations ~1e5) that reaches 3e-3 relative.
        model, inputs = model.double(), tuple(x.double() for x in inputs)
        with torch.no_grad():
            first = model(*inputs)
        exported = torch.export.export(model, inputs)
        with torch.no_grad():
            again = exported.module()(*inputs)
        pick = lambda out: out if isinstance(out, torch.Tensor) else next(iter(out.values())) if isinstance(out, dict) else out[0]  # noqa: E731
        first, second = pick(first), pick(again)
        torch.testing.assert_close(second, first, rtol=1e-7, atol=1e-7 * max(1.0, float(first.abs().max())))



EXPORTABLE = [info.name for info in default_registry() if info.exportable]
PIPELINE_SIZE = (64, 64)


def pipeline(model: torch.nn.Module):
    """raw inputs -> transforms -> network -> postprocess, as a user runs an entry."""
    def run(*inputs):
        x = model.transforms(*inputs)
        out = model(*x) if isinstance(x, tuple) else model(x)
        if model.info.task == "semantic-segmentation":   # a CRF postprocess reads the images
            return model.postprocess(out, inputs[0].shape[-2:], inputs[0])
        return model.postprocess(out, inputs[0].shape[-2:])
    return run


def shapes(out) -> list[tuple[torch.Size, torch.dtype]]:
    return [(t.shape, t.dtype) for t in tree_flatten(out)[0]]


def meta_pipeline_output(name: str, raw: tuple[torch.Tensor, ...]):
    with torch.no_grad():
        return pipeline(zoo.create(name, device="meta"))(*(t.to("meta") for t in raw))


@pytest.mark.parametrize("name", EXPORTABLE)
def test_exportable_entry_runs_on_the_meta_device_without_reading_a_value(name):
    """No host sync in the transforms, the network or the postprocess of an exportable entry: ``.item()``,
    ``.tolist()``, ``.numpy()`` and Python branches on tensor values all fail on meta tensors. (The slow
    test below checks the shapes against the CPU.)"""
    info = zoo.model_info(name)
    raw, _ = raw_example_inputs(info.task, tuple(info.input_size), PIPELINE_SIZE, batch=2)
    out = tree_flatten(meta_pipeline_output(name, raw))[0]
    assert out and all(t.is_meta and t.shape[0] == 2 for t in out)


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPORTABLE)
def test_exportable_entry_compiles_as_one_graph_with_its_transforms_and_postprocess(name):
    """GPU readiness where the CPU can check it: transforms -> network -> postprocess compile with
    ``fullgraph=True`` (no graph break: no data-dependent Python branch, no numpy), output as eager."""
    info = zoo.model_info(name)
    raw, _ = raw_example_inputs(info.task, tuple(info.input_size), PIPELINE_SIZE, batch=2)
    torch.manual_seed(0)
    run = pipeline(zoo.create(name))
    with torch.no_grad():
        eager = run(*raw)
        torch._dynamo.reset()
        compiled = torch.compile(run, fullgraph=True, backend="eager")(*raw)
    torch.testing.assert_close(compiled, eager)
    assert shapes(meta_pipeline_output(name, raw)) == shapes(eager)
