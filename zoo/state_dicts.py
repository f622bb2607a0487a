"""State dicts: read from files (safetensors in a zero-copy memory map; torch pickles only on request,
with ``weights_only=True``), unwrapped from checkpoint containers, checked key by key against a model,
loaded into a model built on the meta device, and expanded into a related architecture (warm starts).

Knows tensors and modules, not the registry: :mod:`zoo.weights` finds the files, :mod:`zoo.factory`
builds the models.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from zoo.errors import StateDictMismatchError, WeightsError

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar", ".pkl")


def read_state_dict(path: str | Path, *, allow_pickle: bool = False, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a safetensors file (or, with ``allow_pickle``, a torch checkpoint with weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    if path.suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise WeightsError(
                f"{path} is a pickle checkpoint; zoo loads safetensors only by default. Pass allow_pickle=True "
                "to read it with torch.load(weights_only=True), or convert it: "
                "safetensors.torch.save_file(state_dict, 'model.safetensors')."
            )
        return read_pickle_checkpoint(path, device=device)
    tensors = mmap_safetensors(path)  # a bad file raises WeightsError naming it
    if torch.device(device).type != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors


def read_pickle_checkpoint(path: str | Path, *, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The state dict of a torch checkpoint, read with ``torch.load(weights_only=True)`` (no code runs)."""
    try:
        obj = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad pickles
        raise WeightsError(f"cannot read checkpoint {path} with torch.load(weights_only=True): {exc}") from None
    return unwrap_checkpoint(obj, path)


_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def mmap_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file in one private (copy-on-write) memory map of the file, each in a
    storage of its own that covers exactly its bytes.

    Nothing is read until a tensor is used, so loading costs a header parse; writes (an optimizer step)
    go to private copies of the pages and never reach the file. One storage per tensor is what
    ``torch.save`` (one dtype per storage) and safetensors' ``save_file`` (no storage that a tensor
    covers only in part) need, so a model holding these tensors saves like any other. The storages hold
    a reference to the map, not a file descriptor (Python's ``mmap`` keeps one duplicate descriptor per
    map, none on Python 3.13+) until the last of them is freed. A file replaced later by renaming a new
    one over it (``zoo download --force``, huggingface_hub) leaves loaded tensors alone on Linux and
    macOS: the map keeps the old inode (on Windows the rename is refused while the map lives); a file
    rewritten in place while tensors are alive changes them, as with any memory map. Where the file
    cannot be mapped it is read into memory once (same storages). The header is validated as the
    safetensors reference does (the tensors tile the data after the header exactly), so a truncated or
    corrupt file raises :class:`WeightsError` naming it instead of giving short or misplaced tensors.
    Tensors whose offset is not aligned to their element size are copied.
    """
    import struct

    path = Path(path)

    def bad(problem: str, fix: str = "it is truncated or corrupt: delete it and download (or write) it again"):
        return WeightsError(f"{path} is not a valid safetensors file: {problem}; {fix}")

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise bad(f"{size} bytes, shorter than the 8-byte header length")
            (header_len,) = struct.unpack("<Q", head)
            if header_len > size - 8:
                raise bad(f"header length {header_len} is larger than the {size - 8} bytes after it")
            raw = f.read(header_len)
    except OSError as exc:
        raise WeightsError(f"cannot read {path}: {exc.strerror or exc}") from None
    specs = _safetensors_header(raw, bad)
    base = 8 + header_len
    end = 0
    for name, spec in sorted(specs.items(), key=lambda item: item[1][2]):
        begin, stop = spec[2]
        if begin != end:
            where = "overlaps the tensor before it" if begin < end else f"leaves {begin - end} bytes unused before it"
            raise bad(f"tensor {name!r} at data_offsets {[begin, stop]} {where}")
        end = stop
    if base + end != size:
        raise bad(f"the tensors need {base + end} bytes, the file has {size}" if base + end > size else
                  f"{size - base - end} bytes after the last tensor")
    buffer = _private_map(path, size) if end > 0 else None
    out = {}
    for name, (dtype, shape, (begin, stop)) in specs.items():
        offset = base + begin
        if stop == begin:  # torch.frombuffer refuses zero bytes
            out[name] = torch.empty(shape, dtype=dtype)
        elif offset % dtype.itemsize == 0:
            # a new storage over exactly these bytes; it holds a reference to the map, not a descriptor
            out[name] = torch.frombuffer(buffer, dtype=dtype, count=(stop - begin) // dtype.itemsize,
                                         offset=offset).view(shape)
        else:
            raw_bytes = torch.frombuffer(buffer, dtype=torch.uint8, count=stop - begin, offset=offset)
            out[name] = raw_bytes.clone().view(dtype).view(shape)
    return out


def _private_map(path: Path, size: int):
    """A writable copy-on-write map of the ``size``-byte file ``path`` (writes never reach the file), or
    where mapping is not possible its bytes read into memory."""
    import sys

    # Python's mmap keeps a duplicate of the descriptor for the map's life unless told not to (3.13+, Unix)
    untracked = {"trackfd": False} if sys.version_info >= (3, 13) and os.name != "nt" else {}
    try:
        with open(path, "rb") as f:
            try:
                import mmap

                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY, **untracked)
            except (ImportError, OSError, ValueError):  # no mmap here (or on this file system): read it
                return bytearray(f.read())
    except OSError as exc:
        raise WeightsError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(mapped) != size:
        raise WeightsError(f"{path} changed while it was read ({size} bytes, then {len(mapped)}); load it again")
    return mapped


def _safetensors_header(raw: bytes, bad) -> dict[str, tuple[torch.dtype, list[int], tuple[int, int]]]:
    """name -> (dtype, shape, (begin, end)) of a safetensors JSON header; ``bad(problem)`` makes the error."""
    import json

    def no_duplicates(pairs: list) -> dict:
        out = dict(pairs)
        if len(out) != len(pairs):
            seen: set[str] = set()
            repeated = sorted({k for k, _ in pairs if k in seen or seen.add(k)})
            raise bad(f"the header gives {', '.join(map(repr, repeated))} twice")
        return out

    if not raw.startswith(b"{"):
        raise bad("the header is not a JSON object")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise bad(f"the header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise bad("the header is not a JSON object")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise bad("__metadata__ is not a map of strings to strings")
    out = {}
    for name, spec in header.items():
        what = f"tensor {name!r}"
        if not isinstance(spec, dict):
            raise bad(f"{what} is {type(spec).__name__}, not an object")
        if set(spec) != {"dtype", "shape", "data_offsets"}:
            raise bad(f"{what} has fields {sorted(spec)}, expected data_offsets, dtype and shape")
        dtype = _SAFETENSORS_DTYPES.get(spec["dtype"]) if isinstance(spec["dtype"], str) else None
        if dtype is None:
            raise bad(f"{what} has dtype {spec['dtype']!r}",
                      f"zoo reads {', '.join(_SAFETENSORS_DTYPES)}: save the tensors in one of these")
        shape, offsets = spec["shape"], spec["data_offsets"]
        if not isinstance(shape, list) or not all(_is_size(d) for d in shape):
            raise bad(f"{what} has shape {shape!r}, not a list of non-negative integers")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_size(v) for v in offsets):
            raise bad(f"{what} has data_offsets {offsets!r}, not two non-negative integers")
        if offsets[0] > offsets[1]:
            raise bad(f"{what} has data_offsets {offsets!r}: the end is before the start")
        numel = extent = 1
        for d in shape:
            numel *= d
            extent *= max(d, 1)
        if extent >= 2 ** 63:
            raise bad(f"{what} has shape {shape}, too large for a tensor")
        if offsets[1] - offsets[0] != numel * dtype.itemsize:
            raise bad(f"{what} has {offsets[1] - offsets[0]} bytes for shape {shape} of {spec['dtype']} "
                      f"({numel * dtype.itemsize} bytes)")
        out[name] = (dtype, shape, (offsets[0], offsets[1]))
    return out


def _is_size(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2 ** 64


def unwrap_checkpoint(obj: object, path: Path | str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state dict inside common checkpoint containers (``state_dict``, ``model``, ``module``)."""
    for _ in range(3):
        if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        if isinstance(obj, Mapping):
            inner = next((obj[k] for k in ("state_dict", "model", "module", "model_state") if k in obj), None)
            if inner is not None:
                obj = inner
                continue
        break
    raise WeightsError(f"{path}: no state dict found (expected a mapping of names to tensors, or one under "
                       "'state_dict' / 'model')")


def strip_prefixes(state_dict: Mapping[str, torch.Tensor], prefixes: tuple[str, ...] = ("module.", "_orig_mod.")) -> dict[str, torch.Tensor]:
    """Remove DataParallel/DDP (``module.``) and torch.compile (``_orig_mod.``) prefixes."""
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in prefixes:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def _expected_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return dict(model.state_dict(keep_vars=True))


def match_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    reinit: tuple[str, ...] = (),
    strict: bool = True,
    what: str = "checkpoint",
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Check keys and shapes of ``state_dict`` against ``model``.

    Keys under a module in ``reinit`` whose shapes differ are dropped (a new head). Returns the tensors
    to load and the model keys left to initialise. With ``strict``, any other missing, unexpected or
    mis-shaped key raises :class:`StateDictMismatchError` listing them all; nothing is loaded.
    """
    expected = _expected_tensors(model)
    under_reinit = lambda k: any(k == m or k.startswith(m + ".") for m in reinit)  # noqa: E731
    to_load, mismatched = {}, []
    for key, tensor in state_dict.items():
        if key not in expected:
            continue
        if tuple(tensor.shape) != tuple(expected[key].shape):
            if not under_reinit(key):
                mismatched.append(f"{key}: checkpoint {tuple(tensor.shape)} vs model {tuple(expected[key].shape)}")
            continue
        to_load[key] = tensor
    unexpected = sorted(k for k in state_dict if k not in expected)
    missing = sorted(k for k in expected if k not in state_dict)
    if strict and (missing or unexpected or mismatched):
        parts = []
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
            if items:
                shown = ", ".join(items[:12]) + (f", ... ({len(items) - 12} more)" if len(items) > 12 else "")
                parts.append(f"{len(items)} {label}: {shown}")
        raise StateDictMismatchError(
            f"{what} does not match the model: " + "; ".join(parts)
            + ". Nothing was loaded. Use the converter for this checkpoint's layout, or pass strict=False "
            "to load the matching tensors and initialise the rest."
        )
    left = sorted(k for k in expected if k not in to_load)
    return to_load, left


def load_into_meta_model(
    model: nn.Module,
    tensors: Mapping[str, torch.Tensor],
    *,
    device: torch.device,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Load ``tensors`` into a model built on the meta device (``assign=True``), then materialise and
    initialise whatever they did not cover (``reset_parameters`` of the owning module).

    Floating-point tensors are cast to ``dtype``, or without it to the dtype the model declares for
    them (weights stored in float16 load into a float32 model as float32)."""
    declared = {k: v.dtype for k, v in model.state_dict(keep_vars=True).items()}
    prepared, seen = {}, set()
    for key, given in tensors.items():
        t = given
        if t.is_floating_point():
            target = dtype if dtype is not None else declared.get(key, t.dtype)
            if target.is_floating_point and t.dtype != target:
                t = t.to(target)
        t = t.to(device)
        # assign=True keeps the tensor itself (no copy: tensors of mmap_safetensors stay in the file's
        # copy-on-write map). torch.save and safetensors' save_file need one storage per tensor covering it
        # exactly, and a parameter must not share memory with another key's, so a tensor not copied above
        # that is a view of a larger storage or whose storage was seen before is copied
        storage = t.untyped_storage()
        if t is given and (t.storage_offset() != 0 or storage.nbytes() != t.numel() * t.element_size()
                           or (storage.nbytes() > 0 and storage.data_ptr() in seen)):
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        prepared[key] = t
    model.load_state_dict(prepared, strict=False, assign=True)
    for module in model.modules():
        own = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
        if not any(t is not None and t.is_meta for _, t in own):
            continue
        loaded = {n: t.detach().clone() for n, t in own if t is not None and not t.is_meta}
        target_dtype = dtype
        for name, t in own:
            if t is None or not t.is_meta:
                continue
            new = torch.empty_like(t, device=device, dtype=(target_dtype if (target_dtype and t.is_floating_point()) else t.dtype))
            if isinstance(t, nn.Parameter):
                module._parameters[name] = nn.Parameter(new, requires_grad=t.requires_grad)
            else:
                module._buffers[name] = new
        reset = getattr(module, "reset_parameters", None) or getattr(module, "reset_running_stats", None)
        if reset is None:
            names = ", ".join(n for n, t in own if t is not None and t.is_meta)
            raise WeightsError(f"cannot initialise {type(module).__name__} tensors {names}: no reset_parameters()")
        with torch.no_grad():
            reset()
            for name, t in loaded.items():  # keep what the checkpoint provided
                getattr(module, name).copy_(t)
    return model


def expand_state_dict(model: nn.Module, theirs: Mapping[str, torch.Tensor], *, source: str) -> dict:
    """Copy into ``model`` (in place) every tensor of ``theirs`` whose name and shape match; return a report.

    A model may declare input channels that it adds to a source architecture
    (``model.inserted_input_channels()``: ``{name: (dim, start, count)}``, e.g. the LS-DFN branch of a
    FlowNet): a source tensor that fits such a parameter once ``count`` channels are taken out at ``start``
    is copied around them and the inserted channels are zeroed ("expanded"), so a plain network's weights
    give the extended network the same outputs to start with. Tensors of ``model`` with no match keep
    their initialisation. The report lists the copied, expanded and kept keys, the source tensors used
    nowhere (``kept_from_source``) and the parameter counts.
    """
    ours = model.state_dict()
    inserted = model.inserted_input_channels() if hasattr(model, "inserted_input_channels") else {}
    copied = [k for k, v in ours.items() if k in theirs and theirs[k].shape == v.shape]
    expanded = {}
    for k, (dim, start, count) in inserted.items():
        if k in theirs and k not in copied:
            shape = list(ours[k].shape)
            shape[dim] -= count
            if list(theirs[k].shape) == shape:
                expanded[k] = (dim, start, count)
    if not copied:
        raise ValueError(f"warm start {source!r}: no tensor matches {type(model).__name__} by name and shape; "
                           "is it weights of a related architecture?")
    with torch.no_grad():
        for k in copied:
            ours[k].copy_(theirs[k].to(ours[k].dtype))
        for k, (dim, start, count) in expanded.items():
            src = theirs[k].to(ours[k].dtype)
            ours[k].zero_()
            ours[k].narrow(dim, 0, start).copy_(src.narrow(dim, 0, start))
            rest = src.shape[dim] - start
            ours[k].narrow(dim, start + count, rest).copy_(src.narrow(dim, start, rest))
    done = set(copied) | set(expanded)
    kept = {k: ("shape " + "x".join(map(str, theirs[k].shape)) + " in source" if k in theirs else "not in source")
            for k in ours if k not in done}
    counted = {k for k, _ in model.named_parameters()}
    return {"source": source, "copied": copied,
            "expanded": {k: f"{count} zero input channels inserted at {start} (dim {dim})"
                         for k, (dim, start, count) in expanded.items()},
            "kept": kept,
            "kept_from_source": sorted(k for k in theirs if k not in done),
            "copied_parameters": sum(ours[k].numel() for k in done if k in counted),
            "total_parameters": sum(ours[k].numel() for k in counted)}
