"""Zero-copy loading (issue 32): ``zoo.create(..., pretrained=True)`` keeps the weights in a copy-on-write
memory map of the verified file, one storage per tensor, so the model saves, trains and never writes the
file; casts and device moves copy; bad files fail before anything is built."""
from __future__ import annotations

import gc
import hashlib
import io
import mmap
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import zoo
from zoo import factory
from zoo import weights as W
from zoo.errors import StateDictMismatchError, WeightsError

NAME = "test-small-segnet"
REVISION = "0123456789abcdef0123456789abcdef01234567"
LINUX_PROC = pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs Linux /proc")


def _state(seed: int = 0, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = factory.build_model(zoo.model_info(NAME))
    for m in model.modules():  # non-trivial BatchNorm statistics and counters: buffers matter too
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.num_batches_tracked.fill_(7)
    return {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
            for k, v in model.state_dict().items()}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def registered(user_registry, tmp_path, monkeypatch):
    """``register(state)``: writes ``state`` into a weights mirror as a registry tag of test-small-segnet and
    returns the file, so ``zoo.create(NAME, pretrained=True)`` takes the full path (mirror, sha256, load)."""
    def register(state: dict[str, torch.Tensor]) -> Path:
        repo = "zoo-test/zero-copy"
        path = tmp_path / "mirror" / repo / REVISION / "model.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(state, str(path))
        user_registry(NAME, {"default": "v1", "tags": {"v1": {
            "hub": {"repo": repo, "revision": REVISION, "file": "model.safetensors", "sha256": _sha256(path),
                    "size": path.stat().st_size},
            "source": "random weights written by the test", "license": "apache-2.0",
            "metrics": [{"dataset": "none", "split": "none", "metric": "none", "value": 0, "measured": "test"}]}}})
        monkeypatch.setenv("ZOO_WEIGHTS_MIRROR", str(tmp_path / "mirror"))
        return path

    return register


def _mapped_ranges(path: Path) -> list[tuple[int, int]]:
    """Address ranges of this process mapping ``path`` (Linux /proc/self/maps)."""
    target = str(path.resolve())
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == target:
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            ranges.append((lo, hi))
    return ranges


def _in_map(t: torch.Tensor, ranges: list[tuple[int, int]]) -> bool:
    return any(lo <= t.data_ptr() < hi for lo, hi in ranges)


def _one_storage_each(state: dict[str, torch.Tensor]) -> bool:
    """Every non-empty tensor alone in a storage that it covers exactly."""
    full = [v for v in state.values() if v.numel()]
    owners = {v.untyped_storage().data_ptr() for v in full}
    return len(owners) == len(full) and all(
        v.storage_offset() == 0 and v.untyped_storage().nbytes() == v.numel() * v.element_size() for v in full)


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


# --- zero-copy, and saving ------------------------------------------------------------------------
@LINUX_PROC
def test_pretrained_weights_stay_in_the_map_one_storage_per_tensor(registered):
    state = _state(1)
    path = registered(state)
    model = zoo.create(NAME, pretrained=True)
    loaded = model.state_dict()
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], v) for k, v in state.items())
    ranges = _mapped_ranges(path)
    assert ranges, "the weights file is not mapped"
    assert all(_in_map(v, ranges) for v in loaded.values()), "a tensor was copied out of the map"
    assert _one_storage_each(loaded)


def test_a_created_model_saves_with_torch_save_and_safetensors(registered, tmp_path):
    state = _state(2)
    registered(state)
    loaded = zoo.create(NAME, pretrained=True).state_dict()
    assert {v.dtype for v in loaded.values()} >= {torch.float32, torch.int64}

    buffer = io.BytesIO()
    torch.save(loaded, buffer)
    buffer.seek(0)
    again = torch.load(buffer, weights_only=True)
    assert again.keys() == state.keys() and all(torch.equal(again[k], v) for k, v in state.items())

    save_file(loaded, str(tmp_path / "saved.safetensors"))
    again = load_file(str(tmp_path / "saved.safetensors"))
    assert again.keys() == state.keys() and all(torch.equal(again[k], v) for k, v in state.items())
    # and what zoo wrote loads back into zoo
    back = zoo.create(NAME, checkpoint=tmp_path / "saved.safetensors").state_dict()
    assert all(torch.equal(back[k], v) for k, v in state.items())


# --- training never writes the file ---------------------------------------------------------------
def test_an_optimizer_step_changes_the_model_and_not_the_file(registered):
    state = _state(3)
    path = registered(state)
    before = _sha256(path)
    model = zoo.create(NAME, pretrained=True).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(2, 3, 33, 33, generator=torch.Generator().manual_seed(0))).square().mean().backward()
        optimizer.step()
    after = model.state_dict()
    assert not torch.equal(after["classifier.weight"], state["classifier.weight"])
    assert not torch.equal(after["stem.1.running_mean"], state["stem.1.running_mean"])  # BatchNorm, in place
    assert after["stem.1.num_batches_tracked"].item() == 9
    with torch.no_grad():
        model.stem[0].weight.fill_(3.0)
    assert _sha256(path) == before
    fresh = zoo.create(NAME, pretrained=True).state_dict()
    assert all(torch.equal(fresh[k], v) for k, v in state.items())


# --- half precision files, casts and devices ------------------------------------------------------
@pytest.mark.parametrize("stored", [torch.float16, torch.bfloat16])
def test_half_precision_files(registered, tmp_path, stored):
    state = _state(4, stored)
    path = registered(state)
    tensors = W.mmap_safetensors(path)
    reference = load_file(str(path))
    assert {v.dtype for v in tensors.values() if v.is_floating_point()} == {stored}
    assert all(torch.equal(tensors[k], reference[k]) for k in reference) and _one_storage_each(tensors)

    as_declared = zoo.create(NAME, pretrained=True).state_dict()  # the model declares float32: a cast copies
    assert {v.dtype for v in as_declared.values() if v.is_floating_point()} == {torch.float32}
    assert all(torch.equal(as_declared[k], v.float() if v.is_floating_point() else v) for k, v in state.items())

    native = zoo.create(NAME, pretrained=True, dtype=stored)  # the file's own dtype: no copy
    loaded = native.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items()) and _one_storage_each(loaded)
    if Path("/proc/self/maps").is_file():
        assert all(_in_map(v, _mapped_ranges(path)) for v in loaded.values())
    buffer = io.BytesIO()
    torch.save(loaded, buffer)  # float16/bfloat16 weights next to int64 counters of the same map
    buffer.seek(0)
    again = torch.load(buffer, weights_only=True)
    assert all(torch.equal(again[k], v) for k, v in state.items())
    save_file(loaded, str(tmp_path / "again.safetensors"))
    with torch.no_grad():
        assert native(torch.randn(1, 3, 33, 33, dtype=stored)).dtype == stored


def test_a_cast_copies_and_the_copy_is_independent(registered):
    state = _state(5)
    path = registered(state)
    model = zoo.create(NAME, pretrained=True, dtype=torch.float64)
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    assert model.state_dict()["stem.1.num_batches_tracked"].dtype == torch.int64
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert load_file(str(path)).keys() == state.keys()
    assert all(torch.equal(load_file(str(path))[k], v) for k, v in state.items())


# --- file descriptors -----------------------------------------------------------------------------
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc")
def test_open_file_descriptors_do_not_grow_with_the_tensor_count(tmp_path):
    counts = {}
    for n in (4, 400):
        path = tmp_path / f"t{n}.safetensors"
        save_file({f"t{i}": torch.full((3, 5), float(i)) for i in range(n)}, str(path))
        gc.collect()
        before = _fd_count()
        tensors = W.mmap_safetensors(path)
        counts[n] = _fd_count() - before
        assert len(tensors) == n and tensors["t3"][0, 0].item() == 3.0 and _one_storage_each(tensors)
        del tensors
        gc.collect()
        assert _fd_count() == before  # the map (and the descriptor Python's mmap keeps) went with the tensors
    assert counts[400] == counts[4] <= 1


# --- without mmap ---------------------------------------------------------------------------------
def test_without_mmap_the_file_is_read_once_into_the_same_layout(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("mmap is not available here")

    path = tmp_path / "w.safetensors"
    state = {"w": torch.randn(4, 3), "n": torch.tensor(5), "h": torch.randn(6).bfloat16(), "e": torch.empty(0, 2)}
    save_file(state, str(path))
    monkeypatch.setattr(mmap, "mmap", refuse)
    tensors = W.mmap_safetensors(path)
    assert all(torch.equal(tensors[k], v) for k, v in state.items()) and _one_storage_each(tensors)
    tensors["w"].add_(1.0)
    assert torch.equal(load_file(str(path))["w"], state["w"])


# --- bad files and mismatches fail before anything is built or loaded -----------------------------
def test_a_corrupt_file_fails_before_the_model_is_built(registered, monkeypatch):
    path = registered(_state(6))
    built = []
    real_build = factory.build_model
    monkeypatch.setattr(factory, "build_model", lambda *a, **k: built.append(1) or real_build(*a, **k))
    data = path.read_bytes()
    path.write_bytes(data[:-64] + bytes(64))  # same size, other bytes: the checksum
    with pytest.raises(WeightsError, match="sha256"):
        zoo.create(NAME, pretrained=True)
    path.write_bytes(data[:-64])  # truncated: the size, and the header when given as a checkpoint
    with pytest.raises(WeightsError, match="truncated"):
        zoo.create(NAME, pretrained=True)
    with pytest.raises(WeightsError, match="not a valid safetensors file"):
        zoo.create(NAME, checkpoint=path)
    assert built == []


def test_strict_key_and_shape_mismatches_fail_before_loading(user_registry, tmp_path, monkeypatch):
    state = _state(7)
    state.pop("stem.0.weight")
    state["classifier.weight"] = torch.zeros(9, 8, 1, 1)
    save_file(state, str(tmp_path / "bad.safetensors"))
    loads = []
    monkeypatch.setattr(W, "load_into_meta_model", lambda *a, **k: loads.append(1))
    with pytest.raises(StateDictMismatchError, match="missing keys: stem.0.weight") as err:
        zoo.create(NAME, checkpoint=tmp_path / "bad.safetensors")
    assert "classifier.weight: checkpoint (9, 8, 1, 1) vs model (5, 8, 1, 1)" in str(err.value)
    assert loads == []


# --- tensors that do not own their storage are copied ---------------------------------------------
def test_shared_or_partial_storages_of_a_checkpoint_are_copied(user_registry, tmp_path):
    """A pickle checkpoint may hold one tensor under two keys, or views of a larger storage; loading keeps
    no tensor that shares memory with another or covers its storage only in part."""
    state = _state(8)
    block = torch.randn(8 * 8 * 9 + 8)
    state["aspp.convs.1.0.weight"] = block[: 8 * 8 * 9].view(8, 8, 3, 3)  # part of a storage
    state["aspp.convs.2.0.weight"] = state["aspp.convs.1.0.weight"]  # the same tensor twice
    torch.save(state, tmp_path / "ckpt.pth")
    model = zoo.create(NAME, checkpoint=tmp_path / "ckpt.pth", allow_pickle=True)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items()) and _one_storage_each(loaded)
    with torch.no_grad():
        model.aspp.convs[1][0].weight.add_(1.0)
    assert torch.equal(model.aspp.convs[2][0].weight, state["aspp.convs.2.0.weight"])
