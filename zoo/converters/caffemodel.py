"""Caffe ``.caffemodel`` files read without Caffe and without protoc.

A ``.caffemodel`` is a serialised ``caffe.NetParameter`` (BVLC/caffe ``src/caffe/proto/caffe.proto``).
Only the fields that carry weights are declared here, in a descriptor built in code; protobuf's own
decoder skips every other field. Field numbers (from caffe.proto):

    NetParameter      name = 1, layers = 2 (V1LayerParameter, before 2015), layer = 100 (LayerParameter)
    LayerParameter    name = 1, type = 2 (string), blobs = 7
    V1LayerParameter  name = 4, type = 5 (enum, read as its number), blobs = 6
    BlobProto         num = 1, channels = 2, height = 3, width = 4, data = 5 (float), shape = 7,
                      double_data = 8
    BlobShape         dim = 1 (int64)

:func:`load_caffemodel` returns ``{"<layer name>.<i>": tensor}`` for blob ``i`` of every layer with blobs
(a convolution's 0 is its weight (out, in, kh, kw), 1 its bias). Blobs without ``shape`` use the legacy
4-D ``num, channels, height, width``.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from zoo.errors import WeightsError

__all__ = ["load_caffemodel", "net_message"]


@lru_cache(maxsize=1)
def net_message() -> type:
    """The ``NetParameter`` message class (a subset of caffe.proto), built from a descriptor in code."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="zoo_caffe_subset.proto", package="zoo_caffe", syntax="proto2")

    def message(name: str, *fields: tuple) -> None:
        m = proto.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            f = m.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                f.type_name = f".zoo_caffe.{type_name}"

    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    message("BlobShape", ("dim", 1, F.TYPE_INT64, rep, None))
    message("BlobProto", ("num", 1, F.TYPE_INT32, opt, None), ("channels", 2, F.TYPE_INT32, opt, None),
            ("height", 3, F.TYPE_INT32, opt, None), ("width", 4, F.TYPE_INT32, opt, None),
            ("data", 5, F.TYPE_FLOAT, rep, None), ("shape", 7, F.TYPE_MESSAGE, opt, "BlobShape"),
            ("double_data", 8, F.TYPE_DOUBLE, rep, None))
    message("LayerParameter", ("name", 1, F.TYPE_STRING, opt, None), ("type", 2, F.TYPE_STRING, opt, None),
            ("blobs", 7, F.TYPE_MESSAGE, rep, "BlobProto"))
    message("V1LayerParameter", ("name", 4, F.TYPE_STRING, opt, None), ("type", 5, F.TYPE_INT32, opt, None),
            ("blobs", 6, F.TYPE_MESSAGE, rep, "BlobProto"))
    message("NetParameter", ("name", 1, F.TYPE_STRING, opt, None),
            ("layers", 2, F.TYPE_MESSAGE, rep, "V1LayerParameter"), ("layer", 100, F.TYPE_MESSAGE, rep, "LayerParameter"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("zoo_caffe.NetParameter"))


def _blob_tensor(blob, where: str) -> torch.Tensor:
    if blob.HasField("shape"):
        shape = [int(d) for d in blob.shape.dim]
    else:
        shape = [blob.num, blob.channels, blob.height, blob.width]
    values = torch.tensor(list(blob.double_data), dtype=torch.float64) if len(blob.double_data) else \
        torch.tensor(list(blob.data), dtype=torch.float32)
    numel = 1
    for d in shape:
        numel *= d
    if values.numel() != numel:
        raise WeightsError(f"{where}: {values.numel()} values for the blob shape {shape}; the file is truncated or corrupt")
    return values.reshape(shape)


def load_caffemodel(path: str | Path) -> dict[str, torch.Tensor]:
    """The weights of a ``.caffemodel`` as ``{"<layer>.<blob index>": tensor}`` (float32, or float64 for
    ``double_data`` blobs)."""
    from google.protobuf.message import DecodeError

    path = Path(path)
    net = net_message()()
    try:
        net.ParseFromString(path.read_bytes())
    except (DecodeError, RuntimeError) as exc:  # the C++ backend raises RuntimeError on some truncations
        raise WeightsError(f"{path} is not a readable .caffemodel ({exc}); it is truncated or corrupt") from None
    out: dict[str, torch.Tensor] = {}
    for layer in [*net.layer, *net.layers]:
        for i, blob in enumerate(layer.blobs):
            key = f"{layer.name}.{i}"
            if key in out:
                raise WeightsError(f"{path}: two layers are named {layer.name!r}")
            out[key] = _blob_tensor(blob, f"{path}: layer {layer.name!r} blob {i}")
    if not out:
        raise WeightsError(f"{path}: no layer with weights; is it a .caffemodel (not a .prototxt)?")
    return out
