"""The .caffemodel reader on files this test writes field by field (protobuf wire format by hand, from the
field numbers of BVLC caffe.proto), independently of the reader's descriptor."""
from __future__ import annotations

import struct

import pytest
import torch

from zoo.converters.caffemodel import load_caffemodel
from zoo.errors import WeightsError


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, wire: int, payload: bytes) -> bytes:
    key = varint(number << 3 | wire)
    return key + (varint(len(payload)) + payload if wire == 2 else payload)


def string(number: int, text: str) -> bytes:
    return field(number, 2, text.encode())


def blob_new(values: torch.Tensor) -> bytes:
    """BlobProto with ``shape`` (7: BlobShape, dim = 1 packed int64) and packed float ``data`` (5)."""
    shape = field(1, 2, b"".join(varint(d) for d in values.shape))
    data = field(5, 2, struct.pack(f"<{values.numel()}f", *values.flatten().tolist()))
    return field(7, 2, shape) + data


def blob_legacy(values: torch.Tensor) -> bytes:
    """BlobProto with num/channels/height/width (1-4) and UNPACKED floats (one field 5 per value)."""
    dims = [1] * (4 - values.dim()) + list(values.shape)
    head = b"".join(field(i + 1, 0, varint(d)) for i, d in enumerate(dims))
    return head + b"".join(field(5, 5, struct.pack("<f", v)) for v in values.flatten().tolist())


def caffemodel(tmp_path, weight, bias, v1_weight):
    layer = string(1, "conv1_1") + string(2, "Convolution") + field(7, 2, blob_new(weight)) + field(7, 2, blob_legacy(bias))
    relu = string(1, "relu1_1") + string(2, "ReLU")                        # no blobs: not in the output
    v1 = string(4, "fc-final") + field(5, 0, varint(4)) + field(6, 2, blob_new(v1_weight))
    net = string(1, "test-net") + field(100, 2, layer) + field(100, 2, relu) + field(2, 2, v1)
    path = tmp_path / "net.caffemodel"
    path.write_bytes(net)
    return path


def test_reads_new_and_v1_layers_packed_and_unpacked(tmp_path):
    torch.manual_seed(0)
    weight, bias, v1_weight = torch.randn(2, 3, 3, 3), torch.randn(2), torch.randn(5, 2, 1, 1)
    out = load_caffemodel(caffemodel(tmp_path, weight, bias, v1_weight))
    assert sorted(out) == ["conv1_1.0", "conv1_1.1", "fc-final.0"]
    torch.testing.assert_close(out["conv1_1.0"], weight, rtol=0, atol=0)
    torch.testing.assert_close(out["conv1_1.1"].flatten(), bias, rtol=0, atol=0)  # legacy blobs are 4-D
    assert out["conv1_1.1"].shape == (1, 1, 1, 2)
    torch.testing.assert_close(out["fc-final.0"], v1_weight, rtol=0, atol=0)


def test_truncated_and_empty_files_are_errors(tmp_path):
    torch.manual_seed(0)
    path = caffemodel(tmp_path, torch.randn(2, 3, 3, 3), torch.randn(2), torch.randn(5, 2, 1, 1))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 7])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        load_caffemodel(path)
    path.write_bytes(string(1, "only-a-name"))
    with pytest.raises(WeightsError, match="no layer with weights"):
        load_caffemodel(path)


def test_a_blob_whose_values_do_not_fill_its_shape(tmp_path):
    bad = field(7, 2, field(1, 2, varint(2) + varint(3))) + field(5, 2, struct.pack("<5f", *range(5)))
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(field(100, 2, string(1, "conv") + field(7, 2, bad)))
    with pytest.raises(WeightsError, match="5 values for the blob shape \\[2, 3\\]"):
        load_caffemodel(path)
