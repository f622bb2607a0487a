"""Fuzzed safetensors files: zoo.weights.mmap_safetensors gives the tensors the safetensors library reads,
or WeightsError naming the file; never another exception."""
from __future__ import annotations

import itertools
import json
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from zoo.errors import WeightsError
from zoo.state_dicts import _SAFETENSORS_DTYPES, mmap_safetensors, read_state_dict

SETTINGS = settings(max_examples=200, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
DTYPES = list(_SAFETENSORS_DTYPES)
_COUNTER = itertools.count()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz-safetensors")


def _file(folder: Path, data: bytes) -> Path:
    # a new name each time: tensors of an earlier example may still map the previous file
    path = folder / f"f{next(_COUNTER)}.safetensors"
    path.write_bytes(data)
    return path


def _raw(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _check(path: Path) -> dict[str, torch.Tensor] | None:
    """Load ``path`` with zoo; when it loads, the safetensors library must read the same bytes."""
    try:
        ours = mmap_safetensors(path)
    except WeightsError as exc:
        assert str(path) in str(exc)
        with pytest.raises(WeightsError):
            read_state_dict(path)
        return None
    theirs = load_file(str(path))  # zoo accepts nothing the reference rejects
    assert ours.keys() == theirs.keys()
    for name, t in ours.items():
        assert t.dtype == theirs[name].dtype and t.shape == theirs[name].shape, name
        assert _raw(t) == _raw(theirs[name]), name
    return ours


def _pack(header: object, data: bytes, *, raw: bytes | None = None) -> bytes:
    text = raw if raw is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


# ---- strategies
json_scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=8)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)
shapes = st.lists(st.integers(0, 5), max_size=4)


@st.composite
def valid_files(draw) -> tuple[dict, bytes]:
    """A well-formed header and data: tensors in a random order of the data, contiguous."""
    names = draw(st.lists(st.text(min_size=0, max_size=10).filter(lambda n: n != "__metadata__"),
                          unique=True, max_size=5))
    specs = {n: (draw(st.sampled_from(DTYPES)), draw(shapes)) for n in names}
    order = draw(st.permutations(names))
    header, offset, chunks = {}, 0, []
    for name in order:
        dtype, shape = specs[name]
        nbytes = _SAFETENSORS_DTYPES[dtype].itemsize * int(torch.Size(shape).numel())
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
        bools = st.lists(st.sampled_from([b"\0", b"\1"]), min_size=nbytes, max_size=nbytes).map(b"".join)
        chunks.append(draw(bools if dtype == "BOOL" else st.binary(min_size=nbytes, max_size=nbytes)))
    if draw(st.booleans()):
        header["__metadata__"] = draw(st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3))
    if draw(st.booleans()):
        header = dict(reversed(list(header.items())))
    return header, b"".join(chunks)


FIELDS = ("dtype", "shape", "data_offsets")


@st.composite
def mutated_files(draw) -> tuple[dict, bytes]:
    """A well-formed file with one field of one tensor (or the metadata, or the data) changed."""
    header, data = draw(valid_files())
    tensors = [n for n in header if n != "__metadata__"]
    choice = draw(st.sampled_from(["field", "spec", "extra", "metadata", "data"] if tensors else ["metadata", "data"]))
    if choice == "data":
        data = draw(st.binary(max_size=len(data) + 16))
    elif choice == "metadata":
        header["__metadata__"] = draw(json_values)
    else:
        name = draw(st.sampled_from(tensors))
        if choice == "spec":
            header[name] = draw(json_values)
        elif choice == "extra":
            header[name] = {**header[name], draw(st.text(max_size=6)): draw(json_values)}
        else:
            field = draw(st.sampled_from(FIELDS))
            replacements = {
                "dtype": st.sampled_from(["F8_E4M3", "U16", "C64", "f32", ""]) | json_values,
                "shape": st.lists(st.integers(-3, 2**64), max_size=4) | json_values,
                "data_offsets": st.lists(st.integers(-8, len(data) + 8), min_size=0, max_size=3) | json_values,
            }
            header[name] = {**header[name], field: draw(replacements[field])}
    return header, data


# ---- properties
@SETTINGS
@given(valid_files())
def test_well_formed_files_load_exactly(folder, file):
    header, data = file
    ours = _check(_file(folder, _pack(header, data)))
    assert ours is not None and ours.keys() == {n for n in header if n != "__metadata__"}


@SETTINGS
@given(valid_files())
def test_files_written_by_safetensors_load_exactly(folder, file):
    header, data = file
    tensors = _check(_file(folder, _pack(header, data)))
    path = folder / f"w{next(_COUNTER)}.safetensors"
    # metadata={} without tensors: safetensors 0.8 writes the header '{},"__metadata__":{}}', which is not JSON
    save_file({k: v.clone() for k, v in tensors.items()}, str(path), metadata=header.get("__metadata__") or None)
    again = _check(path)
    assert {k: _raw(v) for k, v in again.items()} == {k: _raw(v) for k, v in tensors.items()}


@SETTINGS
@given(mutated_files())
def test_mutated_headers_give_tensors_or_weights_error(folder, file):
    header, data = file
    _check(_file(folder, _pack(header, data)))


@SETTINGS
@given(st.one_of(json_values, st.dictionaries(st.text(max_size=6), json_values, max_size=4)), st.binary(max_size=64))
def test_random_headers_give_weights_error_or_tensors(folder, header, data):
    _check(_file(folder, _pack(header, data)))


@SETTINGS
@given(st.binary(max_size=200), st.booleans())
def test_random_bytes_give_weights_error(folder, data, header_length):
    if header_length:  # random bytes after a header length that fits the file
        data = struct.pack("<Q", len(data)) + data
    _check(_file(folder, data))


@SETTINGS
@given(valid_files(), st.data())
def test_truncated_or_extended_files_are_weights_errors(folder, file, data):
    header, body = file
    full = _pack(header, body)
    if data.draw(st.booleans()):
        damaged = full[:data.draw(st.integers(0, len(full) - 1))]
    else:
        damaged = full + data.draw(st.binary(min_size=1, max_size=16))
    path = _file(folder, damaged)
    with pytest.raises(WeightsError, match="is not a valid safetensors file"):
        mmap_safetensors(path)
    with pytest.raises(SafetensorError):
        load_file(str(path))


@pytest.mark.parametrize("header,data,problem", [
    ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, 4, "shape [-1], not a list of non-negative"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}}, 4, "data_offsets [-4, 0], not two"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, 4, "the end is before the start"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
      "b": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]}}, 8, "'b' at data_offsets [2, 6] overlaps"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, 4, "need 77 bytes, the file has 73"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, 8, "leaves 4 bytes unused"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, 8, "4 bytes after the last tensor"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, 4, "4 bytes for shape [2] of F32 (8 bytes)"),
    ({"a": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}}, 1, "dtype 'F8_E4M3'; zoo reads F64"),
    ({"a": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}}, 4, "shape [1.5]"),
    ({"a": {"dtype": "F32", "shape": [0, 2**62, 2**62], "data_offsets": [0, 0]}}, 0, "too large for a tensor"),
    ({"a": [0, 4]}, 4, "tensor 'a' is list, not an object"),
    ({"a": {"dtype": "F32", "shape": [1]}}, 4, "expected data_offsets, dtype and shape"),
    ({"__metadata__": {"k": 1}}, 0, "__metadata__ is not a map of strings to strings"),
    ({"__metadata__": "k"}, 0, "__metadata__ is not a map of strings to strings"),
    ([], 0, "the header is not a JSON object"),
])
def test_malformed_headers_name_the_file_and_the_problem(folder, header, data, problem):
    path = _file(folder, _pack(header, bytes(data)))
    with pytest.raises(WeightsError) as err:
        read_state_dict(path)
    assert str(err.value).startswith(f"{path} is not a valid safetensors file: ") and problem in str(err.value)


@pytest.mark.parametrize("data,problem", [
    (b"\x01\x02", "2 bytes, shorter than the 8-byte header length"),
    (struct.pack("<Q", 2**64 - 1) + b"{}", "header length 18446744073709551615 is larger than the 2 bytes after it"),
    (_pack(None, b"", raw=b"{not json}"), "the header is not JSON"),
    (_pack(None, b"", raw=b'{"a": 1, "a": 2}'), "the header gives 'a' twice"),
    (_pack(None, b"", raw=b"{\xff}"), "the header is not JSON"),
])
def test_malformed_framing_names_the_file_and_the_problem(folder, data, problem):
    path = _file(folder, data)
    with pytest.raises(WeightsError, match="is not a valid safetensors file") as err:
        mmap_safetensors(path)
    assert str(path) in str(err.value) and problem in str(err.value)
