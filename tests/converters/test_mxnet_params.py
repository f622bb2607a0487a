"""MXNet NDArray list files, byte layout from MXNet's src/ndarray/ndarray.cc (NDArray::Save / Load /
LegacyLoad, kMXAPINDArrayListMagic 0x112), include/mxnet/tuple.h (Tuple::Save: int32 ndim + int64
dims), include/mxnet/base.h (Context::Save: int32 dev_type, int32 dev_id) and dmlc-core serializer.h
(vectors and strings: uint64 count / length first); the expected bytes are built here by hand."""
import struct

import pytest
import torch

from zoo.converters.mxnet_params import (
    NDARRAY_V1_MAGIC, NDARRAY_V2_MAGIC, NDARRAY_V3_MAGIC, load_params, read_params_bytes, save_params,
    write_params_bytes,
)
from zoo.errors import WeightsError


def _names(*names: str) -> bytes:
    out = struct.pack("<Q", len(names))
    for n in names:
        out += struct.pack("<Q", len(n)) + n.encode()
    return out


def _tiny_v2() -> bytes:
    """``mx.nd.save('f', {'arg:w': mx.nd.array([[1, 2, 3], [4, 5, 6]])})`` written out field by field."""
    return b"".join([
        struct.pack("<Q", 0x112), struct.pack("<Q", 0),        # list magic, reserved
        struct.pack("<Q", 1),                                   # one array
        struct.pack("<I", 0xF993FAC9),                          # NDARRAY_V2_MAGIC
        struct.pack("<i", 0),                                   # storage type: default (dense)
        struct.pack("<i", 2), struct.pack("<qq", 2, 3),         # shape: ndim, dims (int64)
        struct.pack("<ii", 1, 0),                               # context: cpu(0)
        struct.pack("<i", 0),                                   # type flag: float32
        struct.pack("<6f", 1, 2, 3, 4, 5, 6),                   # data, C order
        _names("arg:w"),
    ])


def test_hand_built_bytes_field_by_field():
    raw = _tiny_v2()
    expected = torch.tensor([[1.0, 2, 3], [4, 5, 6]])
    assert write_params_bytes({"arg:w": expected}) == raw
    out = read_params_bytes(raw)
    assert list(out) == ["w"] and out["w"].dtype == torch.float32
    torch.testing.assert_close(out["w"], expected, rtol=0, atol=0)
    assert list(read_params_bytes(raw, strip_prefix=False)) == ["arg:w"]
    # offsets of the documented fields
    assert struct.unpack_from("<I", raw, 24)[0] == NDARRAY_V2_MAGIC
    assert struct.unpack_from("<iqq", raw, 32) == (2, 2, 3)
    assert struct.unpack_from("<iii", raw, 52) == (1, 0, 0)
    assert struct.unpack_from("<6f", raw, 64) == (1, 2, 3, 4, 5, 6)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_roundtrip_dtypes_shapes_and_prefixes(tmp_path, version):
    g = torch.Generator().manual_seed(0)
    arrays = {
        "arg:conv1_weight": torch.randn(4, 3, 7, 7, generator=g),
        "arg:fc_bias": torch.randn(5, generator=g, dtype=torch.float64),
        "arg:half": torch.randn(2, 3, generator=g).half(),
        "aux:bn_conv1_moving_var": torch.rand(4, generator=g) + 0.5,
        "arg:u8": torch.arange(6, dtype=torch.uint8).view(1, 2, 3),
        "arg:i32": torch.tensor([-1, 2**31 - 1], dtype=torch.int32),
        "arg:i8": torch.tensor([-128, 127], dtype=torch.int8),
        "arg:i64": torch.tensor([[-(2**40)], [3]], dtype=torch.int64),
        "arg:empty": torch.zeros(0, 3),
        "arg:six_d": torch.randn(1, 2, 1, 2, 1, 3, generator=g),
    }
    path = tmp_path / "m-0000.params"
    save_params(path, arrays, version=version)
    out = load_params(path)
    assert list(out) == [k[4:] for k in arrays]
    for name, t in arrays.items():
        got = out[name[4:]]
        assert got.dtype == t.dtype and got.shape == t.shape, name
        assert torch.equal(got, t), name
    assert set(load_params(path, strip_prefix=False)) == set(arrays)


def test_v3_scalar_and_unnamed_list():
    raw = write_params_bytes({"s": torch.tensor(2.5)}, version=3)
    assert struct.unpack_from("<Ii", raw, 24) == (NDARRAY_V3_MAGIC, 0)
    assert struct.unpack_from("<i", raw, 32)[0] == 0  # ndim 0: a scalar in NumPy semantics
    assert read_params_bytes(raw)["s"].item() == 2.5
    unnamed = raw[: -len(_names("s"))] + struct.pack("<Q", 0)  # mx.nd.save of a list: no names
    assert list(read_params_bytes(unnamed)) == ["0"]
    with pytest.raises(ValueError, match="none"):
        write_params_bytes({"s": torch.tensor(1.0)})


def test_legacy_v1_and_v0_layouts():
    v1 = write_params_bytes({"a": torch.tensor([1.0, 2.0])}, version=1)
    assert struct.unpack_from("<Ii", v1, 24) == (NDARRAY_V1_MAGIC, 1)  # no storage type, ndim follows
    assert read_params_bytes(v1)["a"].tolist() == [1.0, 2.0]
    # V0 (no magic): uint32 ndim in the magic slot, uint32 dims, then context, type flag, data
    v0 = b"".join([struct.pack("<QQQ", 0x112, 0, 1), struct.pack("<III", 2, 1, 2), struct.pack("<iii", 2, 3, 1),
                   struct.pack("<2d", 7.0, -1.0), _names("arg:b")])
    out = read_params_bytes(v0)
    assert out["b"].dtype == torch.float64 and out["b"].tolist() == [[7.0, -1.0]]


def test_truncated_file_raises_at_every_cut():
    raw = _tiny_v2()
    for cut in range(len(raw)):
        with pytest.raises(WeightsError, match="truncated"):
            read_params_bytes(raw[:cut])


def test_corrupt_files_raise():
    raw = bytearray(_tiny_v2())
    with pytest.raises(WeightsError, match="header magic"):
        read_params_bytes(b"\x00" * 8 + bytes(raw[8:]))
    bad = bytearray(raw)
    bad[24:28] = struct.pack("<I", 0xDEADBEEF)
    with pytest.raises(WeightsError, match="unknown magic 0xdeadbeef"):
        read_params_bytes(bytes(bad))
    bad = bytearray(raw)
    bad[60:64] = struct.pack("<i", 42)
    with pytest.raises(WeightsError, match="type flag 42"):
        read_params_bytes(bytes(bad))
    with pytest.raises(WeightsError, match="trailing"):
        read_params_bytes(bytes(raw) + b"\x00")
    two_names = bytes(raw[: -len(_names("arg:w"))]) + _names("arg:w", "arg:v")
    with pytest.raises(WeightsError, match="2 names for 1 arrays"):
        read_params_bytes(two_names)
    dup = write_params_bytes({"arg:x": torch.ones(1), "aux:x": torch.ones(1)})
    with pytest.raises(WeightsError, match="two arrays are named 'x'"):
        read_params_bytes(dup)
    assert set(read_params_bytes(dup, strip_prefix=False)) == {"arg:x", "aux:x"}


def test_sparse_and_none_arrays_are_named_in_the_error():
    # row-sparse (stype 1): storage shape, shape, context, type flag, aux type + shape, values, aux (indices)
    sparse = b"".join([
        struct.pack("<Ii", NDARRAY_V2_MAGIC, 1), struct.pack("<iqq", 2, 1, 3), struct.pack("<iqq", 2, 4, 3),
        struct.pack("<iii", 1, 0, 0), struct.pack("<iiq", 6, 1, 1), struct.pack("<3f", 1, 2, 3),
        struct.pack("<q", 2),
    ])
    none = struct.pack("<Iii", NDARRAY_V2_MAGIC, 0, 0)  # V2 ndim 0: an empty ('none') NDArray
    dense = write_params_bytes({"d": torch.ones(2)})[24:-len(_names("d"))]
    raw = struct.pack("<QQQ", 0x112, 0, 3) + dense + sparse + none + _names("arg:d", "arg:emb_weight", "aux:n")
    with pytest.raises(WeightsError, match=r"2 arrays: 'arg:emb_weight': a row-sparse .*'aux:n': an empty"):
        read_params_bytes(raw)


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_params(tmp_path / "nope-0000.params")
