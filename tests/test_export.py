"""``zoo export`` (zoo/export.py): every exportable entry exports to ONNX and .pt2, and the files compute
what the eager model computes (onnxruntime for ONNX). Small entries run in the default suite (with their
weights where zoo has them, transforms fused, dynamic batch); the large ones, random init, in the slow suite."""
from __future__ import annotations

import pytest
import torch

import zoo
from zoo import weights as W
from zoo.cli import main
from zoo.export import ExportError, export, max_difference, raw_example_inputs, read_metadata
from zoo.factory import build_model
from zoo.registry import default_registry

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

SIZE = (64, 64)


def _parameters(info) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in build_model(info).parameters())


EXPORTABLE = [info for info in default_registry() if info.exportable]
SMALL = [info.name for info in EXPORTABLE if _parameters(info) < 5_000_000]
LARGE = [info.name for info in EXPORTABLE if info.name not in SMALL]
# ONNX export costs 15-50 s a model here: the default suite covers one small entry per operator family
# (LS-DFN, dynamic local filter, Dynamic Convolution, FlowNet); the rest of SMALL runs in the slow suite.
ONNX_DEFAULT = ["deeplabv2-lsdfn-small", "dfn-moving-mnist", "dy-resnet-digits", "flownets-small"]
ONNX_SMALL = [pytest.param(n, marks=() if n in ONNX_DEFAULT else pytest.mark.slow) for n in SMALL]


def _tolerance(expected) -> float:
    scale = max(float(t.abs().max()) for t in torch.utils._pytree.tree_flatten(expected)[0] if isinstance(t, torch.Tensor))
    return 1e-4 * max(1.0, scale)


def _difference(exported, inputs) -> tuple[float, float]:
    with torch.no_grad():
        expected = exported.program(*inputs)
    return max_difference(exported, inputs), _tolerance(expected)


def test_the_small_and_large_lists_cover_every_exportable_entry():
    assert len(SMALL) >= 5 and len(SMALL) + len(LARGE) == len(EXPORTABLE) >= 30
    assert set(ONNX_DEFAULT) <= set(SMALL)


@pytest.mark.parametrize("name", ONNX_SMALL)
def test_small_entry_exports_to_onnx_with_transforms_and_a_dynamic_batch(name, tmp_path):
    info = zoo.model_info(name)
    random_init = info.default_tag is None
    exported = export(name, tmp_path / f"{name}.onnx", size=SIZE, dynamic_batch=True, with_transforms=True,
                      random_init=random_init)
    meta = read_metadata(exported.path)
    assert meta == exported.metadata
    assert meta["entry"] == name and meta["with_transforms"] and meta["inputs"][0]["dtype"] == "uint8"
    assert all(i["shape"][0] == "batch" for i in meta["inputs"])
    if random_init:
        assert meta["tag"] is None and meta["weights_sha256"] is None
    else:
        assert meta["tag"] == info.default_tag
        assert meta["weights_sha256"] == W.sha256_file(W.resolve(info, info.default_tag))
    for batch in (1, 3):
        inputs, _ = raw_example_inputs(info.task, tuple(info.input_size), SIZE, batch)
        difference, tolerance = _difference(exported, inputs)
        assert difference <= tolerance, (batch, difference)


@pytest.mark.parametrize("name", SMALL)
def test_small_entry_round_trips_through_pt2(name, tmp_path):
    random_init = zoo.model_info(name).default_tag is None
    exported = export(name, tmp_path / f"{name}.pt2", format="pt2", size=SIZE, random_init=random_init)
    assert read_metadata(exported.path)["format"] == "pt2"
    assert read_metadata(exported.path)["transforms"]["preset"] == zoo.model_info(name).transforms_for(
        exported.metadata["tag"]).preset
    difference, tolerance = _difference(exported, exported.inputs)
    assert difference <= tolerance


@pytest.mark.slow
@pytest.mark.parametrize("name", LARGE)
def test_large_entry_exports_to_onnx_and_matches_onnxruntime(name, tmp_path):
    exported = export(name, tmp_path / f"{name}.onnx", size=SIZE, random_init=True)
    difference, tolerance = _difference(exported, exported.inputs)
    assert difference <= tolerance


def test_the_exported_transforms_are_the_models(tmp_path):
    """With transforms fused, the file maps uint8 frames to what model(model.transforms(frames)) gives."""
    exported = export("flownets-small", tmp_path / "f.pt2", format="pt2", size=SIZE, with_transforms=True,
                      dynamic_batch=True)
    model = zoo.create("flownets-small", pretrained=True)
    (frames,), _ = raw_example_inputs("optical-flow", (6, 64, 64), SIZE, 2)
    with torch.no_grad():
        eager = model(model.transforms(frames))
        again = torch.export.load(exported.path).module()(frames)
    torch.testing.assert_close(again, eager, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name, kwargs, message", [
    ("faster-rcnn-r50-dcn", {"random_init": True}, "not exportable: data-dependent numbers of proposals"),
    ("dynet-resnet18", {}, "has no default weights to export"),
    ("flownets-small.flyingshapes-28250", {"random_init": True}, "drop --random-init or the tag"),
    ("flownets-small", {"format": "tflite"}, "unknown export format 'tflite'"),
])
def test_refusals_name_the_problem_and_the_fix(name, kwargs, message, tmp_path):
    with pytest.raises(ExportError, match=message.replace("(", r"\(")):
        export(name, tmp_path / "x.onnx", **kwargs)
    assert not list(tmp_path.iterdir())


def test_an_output_directory_is_refused(tmp_path):
    with pytest.raises(ExportError, match="is a directory"):
        export("flownets-small", tmp_path)


def test_read_metadata_refuses_a_foreign_file(tmp_path):
    import onnx
    from onnx import helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), tmp_path / "other.onnx")
    with pytest.raises(ExportError, match="no zoo metadata"):
        read_metadata(tmp_path / "other.onnx")
    with pytest.raises(ExportError, match="no such file"):
        read_metadata(tmp_path / "missing.onnx")


def test_cli_export_with_check(tmp_path, capsys):
    out = tmp_path / "m.pt2"
    assert main(["export", "deeplabv2-lsdfn-small", "--format", "pt2", "--out", str(out), "--size", "64", "64",
                 "--with-transforms", "--check"]) == 0
    text = capsys.readouterr().out
    default = zoo.model_info("deeplabv2-lsdfn-small").default_tag
    assert f"wrote {out} (pt2): deeplabv2-lsdfn-small.{default}" in text
    assert "check: largest |exported - eager|" in text and out.is_file()


def test_cli_export_error_is_one_line(tmp_path, capsys):
    assert main(["export", "condinst-r50", "--out", str(tmp_path / "c.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zoo export: error: 'condinst-r50' is not exportable: data-dependent") and "\n" not in err
