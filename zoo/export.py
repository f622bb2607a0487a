"""``zoo export``: a registry model (and optionally its transforms) to a torch.export ``.pt2`` or ONNX file.

The file carries a JSON record of what it holds under the key ``zoo`` (ONNX ``metadata_props``; the
``.pt2`` archive's extra file ``zoo.json``): the entry, the weights tag, the sha256 of the weights file
loaded, zoo's version and the input contract (names, shapes with ``"batch"`` where the batch is
dynamic, dtype, value range, layout). :func:`read_metadata` reads it back; :func:`check_onnx` runs the
file in onnxruntime against the eager model.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from zoo import weights as W
from zoo.errors import ZooError
from zoo.factory import create, example_inputs, model_info, parse_name
from zoo.io import atomic_output
from zoo.tasks import get_task

FORMATS = ("onnx", "pt2")
METADATA_KEY = "zoo"
PT2_METADATA_FILE = "zoo.json"
MAX_DYNAMIC_BATCH = 1024


class ExportError(ZooError):
    """The entry cannot be exported as asked (not exportable, no weights, unsupported option)."""


@dataclass(frozen=True)
class InputSpec:
    """One positional input of the exported program."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str
    values: str


class WithTransforms(nn.Module):
    """``model(*transforms(*raw))``: the entry's inference transforms fused in front of the network, so the
    exported program takes raw uint8 images."""

    def __init__(self, model: nn.Module, transforms: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.transforms = transforms

    def forward(self, first: torch.Tensor, second: torch.Tensor | None = None) -> Any:
        inputs = self.transforms(first) if second is None else self.transforms(first, second)
        return self.model(*inputs) if isinstance(inputs, tuple) else self.model(inputs)


def raw_example_inputs(task: str, input_size: tuple[int, ...], size: tuple[int, int],
                       batch: int) -> tuple[tuple[torch.Tensor, ...], list[InputSpec]]:
    """uint8 inputs of the transforms (what a user feeds ``model.transforms``, :attr:`Task.raw_inputs`)
    and their contract."""
    raw = get_task(task).raw_inputs(tuple(input_size[:-2]), *size)
    generator = torch.Generator().manual_seed(0)
    tensors = tuple(torch.randint(0, 256, (batch, *r.shape), dtype=torch.uint8, generator=generator) for r in raw)
    return tensors, [InputSpec(r.name, (batch, *r.shape), "uint8", r.values) for r in raw]


def network_input_specs(task: str, inputs: tuple[torch.Tensor, ...]) -> list[InputSpec]:
    """The contract of the network's own inputs (after the transforms; :attr:`Task.input_names`)."""
    names = get_task(task).input_names
    if len(inputs) != len(names):
        names = tuple(f"input_{i}" for i in range(len(inputs)))
    return [InputSpec(name, tuple(t.shape), str(t.dtype).removeprefix("torch."), "as produced by the entry's transforms")
            for name, t in zip(names, inputs)]


def _weights(name: str, random_init: bool) -> tuple[str, str | None, str | None]:
    """(entry, tag, sha256 of the weights file) for ``name`` / ``name.tag``."""
    base, tag = parse_name(name)
    info = model_info(base)
    if random_init:
        if tag is not None:
            raise ExportError(f"{name!r} names weights tag {tag!r}; drop --random-init or the tag")
        return base, None, None
    if tag is None and info.default_tag is None:
        raise ExportError(f"{base!r} has no default weights to export; name a tag (zoo info {base}) or pass "
                          f"--random-init to export randomly initialised weights")
    tag = info.weights_for(tag).tag
    path = W.resolve(info, tag)
    return base, tag, W.sha256_file(path)


@dataclass
class Exported:
    """What :func:`export` wrote: the file, its metadata, and the eager program and example inputs it traced."""

    path: Path
    metadata: dict[str, Any]
    program: nn.Module
    inputs: tuple[torch.Tensor, ...]


def export(name: str, out: str | Path, *, format: Literal["onnx", "pt2"] = "onnx", size: tuple[int, int] | None = None,
           dynamic_batch: bool = False, with_transforms: bool = False, random_init: bool = False,
           **create_kwargs: Any) -> Exported:
    """Export ``name`` (``name.tag``) to ``out``.

    ``size``: the spatial size of the inputs (default: the entry's ``input_size``; with
    ``with_transforms`` the size of the raw images). ``dynamic_batch``: the batch dimension is symbolic
    (1..1024). Weights: the tag named, else the entry's default; ``random_init`` exports random weights.
    """
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    info = model_info(name)
    if not info.exportable:
        raise ExportError(f"{info.name!r} is not exportable: {info.export_note or 'registry field exportable: false'}")
    entry, tag, sha256 = _weights(name, random_init)
    out = Path(out)
    if out.is_dir():
        raise ExportError(f"--out {out} is a directory; give a file name such as {out / (entry + '.' + format)}")
    model = create(f"{entry}.{tag}" if tag else entry, **create_kwargs)
    size = tuple(size) if size is not None else tuple(info.input_size[-2:])
    batch = 2 if dynamic_batch else 1  # an example batch of 1 would let torch.export specialise the batch to 1
    if with_transforms:
        program: nn.Module = WithTransforms(model, model.transforms).eval()
        inputs, specs = raw_example_inputs(info.task, tuple(info.input_size), size, batch)
    else:
        program = model
        inputs = example_inputs(info, size, batch=batch)
        if not all(isinstance(t, torch.Tensor) for t in inputs):
            raise ExportError(f"{entry!r}: its network takes a list of images (task {info.task}); not exportable")
        specs = network_input_specs(info.task, inputs)
    if dynamic_batch:
        specs = [InputSpec(s.name, ("batch", *s.shape[1:]), s.dtype, s.values) for s in specs]
    dynamic = tuple({0: torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)} for _ in inputs) if dynamic_batch else None
    metadata = {
        "zoo_version": _version(), "entry": entry, "tag": tag, "weights_sha256": sha256, "format": format,
        "task": info.task, "with_transforms": with_transforms,
        "inputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype, "values": s.values} for s in specs],
        "transforms": None if with_transforms else {"preset": info.transforms_for(tag).preset,
                                                    "args": _plain(info.transforms_for(tag).args)},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out, keep_suffix=True) as tmp:  # torch.export.save wants ".pt2"
        if format == "pt2":
            exported = torch.export.export(program, inputs, dynamic_shapes=dynamic)
            torch.export.save(exported, tmp, extra_files={PT2_METADATA_FILE: json.dumps(metadata)})
        else:
            _export_onnx(program, inputs, dynamic, [s.name for s in specs], tmp, metadata)
    return Exported(out, metadata, program, inputs)


def max_difference(exported: Exported, inputs: tuple[torch.Tensor, ...] | None = None) -> float:
    """Largest absolute difference between the exported file (onnxruntime for ONNX, the loaded program
    for .pt2) and the eager program on ``inputs`` (default: the traced example inputs)."""
    inputs = exported.inputs if inputs is None else inputs
    with torch.no_grad():
        expected = exported.program(*inputs)
    if exported.metadata["format"] == "onnx":
        return check_onnx(exported.path, inputs, expected)
    with torch.no_grad():
        again = torch.export.load(exported.path).module()(*inputs)
    pairs = zip(tree_flatten(again)[0], tree_flatten(expected)[0])
    return max(float((a.float() - e.float()).abs().max()) for a, e in pairs if isinstance(e, torch.Tensor))


def _export_onnx(program: nn.Module, inputs: tuple[torch.Tensor, ...], dynamic: Any, input_names: list[str],
                 path: Path, metadata: dict[str, Any]) -> None:
    try:
        import onnx
    except ImportError:
        raise ExportError("ONNX export needs onnx and onnxscript: pip install 'dynzoo[export]'") from None
    with torch.no_grad():
        reference = program(*inputs)
    count = len(tree_flatten(reference)[0])
    output_names = ["output"] if count == 1 else [f"output_{i}" for i in range(count)]
    onnx_program = torch.onnx.export(program, inputs, dynamo=True, dynamic_shapes=dynamic, input_names=input_names,
                                     output_names=output_names, verbose=False)
    onnx_program.save(str(path))
    proto = onnx.load(str(path))
    for key, value in {METADATA_KEY: json.dumps(metadata), "entry": metadata["entry"], "tag": metadata["tag"] or "",
                       "weights_sha256": metadata["weights_sha256"] or ""}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``zoo`` record of an exported ``.onnx`` or ``.pt2`` file."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such file")
    if path.suffix == ".pt2":
        extra = {PT2_METADATA_FILE: ""}
        torch.export.load(path, extra_files=extra)
        return json.loads(extra[PT2_METADATA_FILE])
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if METADATA_KEY not in props:
        raise ExportError(f"{path}: no zoo metadata (not written by zoo export)")
    return json.loads(props[METADATA_KEY])


def check_onnx(path: str | Path, inputs: tuple[torch.Tensor, ...], expected: Any) -> float:
    """Run ``path`` in onnxruntime (CPU) on ``inputs``; the largest absolute difference to ``expected``
    (the eager outputs, any nesting of tensors)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: t.detach().cpu().numpy() for i, t in zip(session.get_inputs(), inputs)}
    outputs = session.run(None, feeds)
    flat = [t for t in tree_flatten(expected)[0] if isinstance(t, torch.Tensor)]
    if len(flat) != len(outputs):
        raise ExportError(f"{path}: {len(outputs)} outputs, the eager model gave {len(flat)}")
    return max(float((torch.from_numpy(o) - e.float().cpu()).abs().max()) for o, e in zip(outputs, flat))


def _plain(value: Any) -> Any:
    from zoo.registry import thaw

    return json.loads(json.dumps(thaw(value), default=str))


def _version() -> str:
    from zoo import __version__

    return __version__
