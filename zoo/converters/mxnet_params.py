"""Reader (and, for tests, writer) of MXNet's NDArray list files (``mx.nd.save``, ``Module.save_checkpoint``:
``prefix-0000.params``), without MXNet.

Layout (little-endian; MXNet ``src/ndarray/ndarray.cc`` ``NDArray::Save``/``Load``/``LegacyLoad``,
``include/mxnet/tuple.h`` ``Tuple::Save``, ``include/mxnet/base.h`` ``Context::Save``, dmlc-core
``serializer.h`` for the vectors and strings):

    uint64 0x112 (kMXAPINDArrayListMagic), uint64 reserved (0)
    uint64 number of arrays, then per array:
        uint32 magic: 0xF993fac9 (V2) or 0xF993faca (V3, NumPy shape semantics)
        int32  storage type (0 dense; 1 row-sparse and 2 CSR carry one/two aux arrays)
        [sparse only: storage shape]
        shape: int32 ndim, then ndim x int64 dims   (V2: ndim 0 = "none" array, nothing follows;
                                                     V3: ndim -1 = none, ndim 0 = a scalar)
        context: int32 dev_type (1 cpu, 2 gpu, ...), int32 dev_id
        int32  type flag (mshadow: 0 float32, 1 float64, 2 float16, 3 uint8, 4 int32, 5 int8, 6 int64)
        [sparse only: per aux array int32 type flag and its shape]
        data: prod(shape) elements, C order  [sparse: values of the storage shape, then the aux arrays]
    uint64 number of names (0, or the number of arrays), each: uint64 length + bytes (UTF-8)

Older files (MXNet < 0.11) have no storage type: magic 0xF993fac8 (V1) is followed by the shape as
above; with no magic at all (V0) the first uint32 is ndim itself, followed by ndim x uint32 dims. Then
context, type flag and data as above.

Only dense arrays are read; a sparse or none array raises :class:`~zoo.errors.WeightsError` naming it.
``Module.save_checkpoint`` prefixes parameter names with ``arg:`` (weights, biases, BN gamma/beta) or
``aux:`` (BN moving mean/var): :func:`load_params` strips them (``strip_prefix=False`` keeps them); a
file without names (``mx.nd.save`` of a list) gives keys ``"0"``, ``"1"``, ...
"""
from __future__ import annotations

import struct
from collections.abc import Mapping
from pathlib import Path

import torch

from zoo.errors import WeightsError
from zoo.io import write_atomic

__all__ = ["LIST_MAGIC", "NDARRAY_V1_MAGIC", "NDARRAY_V2_MAGIC", "NDARRAY_V3_MAGIC", "load_params",
           "read_params_bytes", "save_params", "write_params_bytes"]

LIST_MAGIC = 0x112
NDARRAY_V1_MAGIC = 0xF993FAC8
NDARRAY_V2_MAGIC = 0xF993FAC9
NDARRAY_V3_MAGIC = 0xF993FACA
_DENSE, _ROW_SPARSE, _CSR = 0, 1, 2
_NUM_AUX = {_DENSE: 0, _ROW_SPARSE: 1, _CSR: 2}
_CPU = 1

#: mshadow type flag -> torch dtype
DTYPES: dict[int, torch.dtype] = {0: torch.float32, 1: torch.float64, 2: torch.float16, 3: torch.uint8,
                                  4: torch.int32, 5: torch.int8, 6: torch.int64}
_FLAGS = {v: k for k, v in DTYPES.items()}
_MAX_LEGACY_NDIM = 32  # a V0 file stores ndim in the magic slot; anything larger is not an ndarray


class _Reader:
    def __init__(self, data: bytes | memoryview, source: str) -> None:
        self.buf, self.pos, self.source = memoryview(data), 0, source

    def fail(self, what: str) -> WeightsError:
        return WeightsError(f"{self.source} is not a readable MXNet .params file: {what} (at byte {self.pos})")

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise self.fail(f"truncated while reading {what} ({n} bytes needed, {len(self.buf) - self.pos} left)")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def shape(self, int64_dims: bool, what: str) -> tuple[int, ...] | None:
        """int32 ndim + dims; None for an unknown (ndim -1) shape."""
        (ndim,) = self.unpack("i", f"{what} ndim")
        if ndim == -1:
            return None
        if not 0 <= ndim <= _MAX_LEGACY_NDIM:
            raise self.fail(f"{what} has ndim {ndim}")
        dims = self.unpack(("q" if int64_dims else "I") * ndim, f"{what} dims")
        return tuple(dims)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _itemsize(r: _Reader, flag: int, what: str) -> int:
    if flag not in DTYPES:
        raise r.fail(f"{what} has unknown mshadow type flag {flag} (known: {sorted(DTYPES)})")
    return torch.empty((), dtype=DTYPES[flag]).element_size()


def _read_array(r: _Reader, index: int) -> torch.Tensor | str:
    """One NDArray: a tensor, or a string saying why it cannot be used (sparse / none)."""
    what = f"array #{index}"
    (magic,) = r.unpack("I", f"{what} magic")
    if magic in (NDARRAY_V2_MAGIC, NDARRAY_V3_MAGIC):
        (stype,) = r.unpack("i", f"{what} storage type")
        if stype not in _NUM_AUX:
            raise r.fail(f"{what} has unknown storage type {stype}")
        nad = _NUM_AUX[stype]
        storage_shape = r.shape(True, f"{what} storage shape") if nad else None
        shape = r.shape(True, f"{what} shape")
        none = shape is None or (magic == NDARRAY_V2_MAGIC and len(shape) == 0) or any(d < 0 for d in shape)
    elif magic == NDARRAY_V1_MAGIC or magic <= _MAX_LEGACY_NDIM:
        stype, nad, storage_shape = _DENSE, 0, None
        if magic == NDARRAY_V1_MAGIC:
            shape = r.shape(True, f"{what} shape")
        else:  # V0: the magic slot is ndim, dims are uint32
            shape = tuple(r.unpack("I" * magic, f"{what} dims"))
        none = shape is None or len(shape) == 0
    else:
        raise r.fail(f"{what} has unknown magic 0x{magic:08x}")
    if none:
        return "an empty ('none') NDArray"
    r.unpack("ii", f"{what} context")
    (flag,) = r.unpack("i", f"{what} type flag")
    size = _itemsize(r, flag, what)
    if nad:
        aux = []
        for i in range(nad):
            (aux_flag,) = r.unpack("i", f"{what} aux type {i}")
            aux.append((aux_flag, r.shape(True, f"{what} aux shape {i}")))
        r.take(size * _numel(storage_shape or ()), f"{what} values")
        for i, (aux_flag, aux_shape) in enumerate(aux):
            r.take(_itemsize(r, aux_flag, what) * _numel(aux_shape or ()), f"{what} aux data {i}")
        return f"a {'row-sparse' if stype == _ROW_SPARSE else 'CSR'} NDArray (only dense arrays are supported)"
    raw = r.take(size * _numel(shape), f"{what} data ({_numel(shape)} x {DTYPES[flag]})")
    tensor = torch.frombuffer(bytearray(raw), dtype=DTYPES[flag]) if len(raw) else torch.empty(0, dtype=DTYPES[flag])
    return tensor.reshape(shape)


def read_params_bytes(data: bytes | memoryview, *, strip_prefix: bool = True, source: str = "<bytes>"
                      ) -> dict[str, torch.Tensor]:
    """Parse an MXNet NDArray list (see the module docstring) into ``{name: CPU tensor}`` (file order).

    ``strip_prefix`` drops the ``arg:`` / ``aux:`` prefixes of checkpoints (two arrays that would get
    the same name are an error). Truncated or corrupt data, sparse or none arrays raise
    :class:`~zoo.errors.WeightsError`.
    """
    r = _Reader(data, source)
    magic, _reserved = r.unpack("QQ", "header")
    if magic != LIST_MAGIC:
        raise r.fail(f"header magic 0x{magic:x} is not 0x{LIST_MAGIC:x}")
    (count,) = r.unpack("Q", "number of arrays")
    if count > len(r.buf):
        raise r.fail(f"header claims {count} arrays")
    arrays = [_read_array(r, i) for i in range(count)]
    (num_names,) = r.unpack("Q", "number of names")
    if num_names not in (0, count):
        raise r.fail(f"{num_names} names for {count} arrays")
    names = []
    for i in range(num_names):
        (length,) = r.unpack("Q", f"length of name #{i}")
        raw = r.take(length, f"name #{i}")
        try:
            names.append(bytes(raw).decode("utf-8"))
        except UnicodeDecodeError:
            raise r.fail(f"name #{i} is not UTF-8") from None
    if r.pos != len(r.buf):
        raise r.fail(f"{len(r.buf) - r.pos} unexpected trailing bytes")
    if not names:
        names = [str(i) for i in range(count)]
    bad = [f"{n!r}: {a}" for n, a in zip(names, arrays) if isinstance(a, str)]
    if bad:
        raise WeightsError(f"{source}: cannot read {len(bad)} arrays: {'; '.join(bad[:5])}")
    out: dict[str, torch.Tensor] = {}
    for name, tensor in zip(names, arrays):
        key = name.split(":", 1)[1] if strip_prefix and name.startswith(("arg:", "aux:")) else name
        if key in out:
            raise WeightsError(f"{source}: two arrays are named {key!r} (after stripping 'arg:'/'aux:'); "
                               "read with strip_prefix=False")
        out[key] = tensor
    return out


def load_params(path: str | Path, *, strip_prefix: bool = True) -> dict[str, torch.Tensor]:
    """Read an MXNet ``.params`` file (``mx.nd.save`` / ``save_checkpoint``) into ``{name: tensor}``,
    ``arg:`` / ``aux:`` prefixes stripped unless ``strip_prefix=False``. See :func:`read_params_bytes`."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"MXNet params file {path} does not exist")
    return read_params_bytes(path.read_bytes(), strip_prefix=strip_prefix, source=str(path))


def write_params_bytes(arrays: Mapping[str, torch.Tensor], *, version: int = 2) -> bytes:
    """Serialise ``{name: tensor}`` as ``mx.nd.save`` does (names as given, e.g. ``"arg:conv1_weight"``):
    dense arrays on cpu(0), V2 magic (``version=3``: V3, ``version=1``: the pre-0.11 V1 layout)."""
    if version not in (1, 2, 3):
        raise ValueError(f"version must be 1, 2 or 3, got {version}")
    magic = {1: NDARRAY_V1_MAGIC, 2: NDARRAY_V2_MAGIC, 3: NDARRAY_V3_MAGIC}[version]
    parts = [struct.pack("<QQQ", LIST_MAGIC, 0, len(arrays))]
    for name, tensor in arrays.items():
        if tensor.dtype not in _FLAGS:
            raise ValueError(f"{name}: dtype {tensor.dtype} has no mshadow type flag (known: {list(_FLAGS)})")
        if tensor.dim() == 0 and version != 3:
            raise ValueError(f"{name}: 0-d tensors are 'none' arrays before V3; reshape to (1,)")
        t = tensor.detach().to("cpu").contiguous()
        parts.append(struct.pack("<I", magic))
        if version != 1:
            parts.append(struct.pack("<i", _DENSE))
        parts.append(struct.pack(f"<i{t.dim()}q", t.dim(), *t.shape))
        parts.append(struct.pack("<iii", _CPU, 0, _FLAGS[t.dtype]))
        parts.append(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    parts.append(struct.pack("<Q", len(arrays)))
    for name in arrays:
        raw = name.encode("utf-8")
        parts.append(struct.pack("<Q", len(raw)) + raw)
    return b"".join(parts)


def save_params(path: str | Path, arrays: Mapping[str, torch.Tensor], *, version: int = 2) -> None:
    """Write ``arrays`` to ``path`` as an MXNet ``.params`` file (see :func:`write_params_bytes`)."""
    write_atomic(path, write_params_bytes(arrays, version=version))
