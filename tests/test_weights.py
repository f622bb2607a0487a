"""Weights end to end with the real huggingface_hub client against a local Hub server:
publish -> download -> create, pinning, offline, corruption, checksums, mirrors, strict loading."""
from __future__ import annotations

import hashlib
import shutil

import huggingface_hub.constants as hf_constants
import pytest
import torch
from safetensors.torch import load_file, save_file

import zoo
import zoo.files
from zoo import weights as W
from zoo.cards.publish import PublishError, publish
from zoo.errors import ChecksumError, OfflineError, StateDictMismatchError, UnknownModelError, WeightsError

NAME = "test-small-segnet"
REPO = "zoo-test/small-segnet"


def _random_model(seed: int):
    torch.manual_seed(seed)
    model = zoo.create(NAME)
    for m in model.modules():  # non-trivial BN statistics so that buffers matter too
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    return model


def _save(model, path):
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def assert_same_model(a, b):
    """Bit-identical weights and buffers, and outputs equal up to float rounding (kernels may pick other
    SIMD paths for differently aligned memory, e.g. memory-mapped tensors)."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(_x()), b.eval()(_x()), rtol=1e-5, atol=1e-6)


def _x():
    return torch.randn(2, 3, 33, 47, generator=torch.Generator().manual_seed(0))


def _weights_entry(entry: dict, tag: str) -> dict:
    return {"default": tag, "tags": {tag: {
        "hub": {k: entry[k] for k in ("repo", "revision", "file", "sha256", "size")}, "source": "random weights published by the test", "license": "apache-2.0",
        "metrics": [{"dataset": "none", "split": "none", "metric": "none", "value": 0, "measured": "test"}]}}}


@pytest.fixture
def published(hub_server, hf_cache, user_registry, tmp_path):
    """Random weights for test-small-segnet published as tag v1 and registered; returns (model, entry)."""
    model = _random_model(1)
    entry = publish(NAME, _save(model, tmp_path / "w.safetensors"), REPO, tag="v1", endpoint=hub_server.endpoint)
    user_registry(NAME, _weights_entry(entry, "v1"))
    return model, entry


# --- publish -> create ----------------------------------------------------------------------------
@pytest.mark.parametrize("disable_xet", [False, True], ids=["xet-default", "xet-disabled"])
def test_publish_then_create_gives_the_published_model(hub_server, hf_cache, user_registry, tmp_path, monkeypatch, disable_xet):
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_XET", disable_xet)
    model = _random_model(1)
    entry = publish(NAME, _save(model, tmp_path / "w.safetensors"), REPO, tag="v1", endpoint=hub_server.endpoint)
    assert len(entry["revision"]) == 40 and entry["tag"] == "v1"
    served = hub_server.files(REPO, entry["revision"])
    assert set(served) >= {"model.safetensors", "config.json", "README.md"}
    assert hashlib.sha256(served["model.safetensors"]).hexdigest() == entry["sha256"]
    assert hub_server.resolve(REPO, "v1") == entry["revision"]
    readme = served["README.md"].decode()
    assert readme.startswith("---\n") and "library_name: dynzoo" in readme and "## Usage" in readme

    user_registry(NAME, _weights_entry(entry, "v1"))
    loaded = zoo.create(NAME, pretrained=True)
    assert not loaded.training and loaded.weights_tag == "v1" and loaded.info.name == NAME
    assert all(isinstance(p, torch.nn.Parameter) and not p.is_meta for p in loaded.parameters())
    assert_same_model(loaded, model)

    from_hub = zoo.create(f"hf-hub:{REPO}@v1")
    assert_same_model(from_hub, model)
    assert from_hub.info.arch == "test_small_segnet"


def test_publish_refuses_to_move_a_tag_without_force(published, hub_server, tmp_path):
    _, first = published
    other = _save(_random_model(2), tmp_path / "w2.safetensors")
    with pytest.raises(PublishError, match="already exists"):
        publish(NAME, other, REPO, tag="v1", endpoint=hub_server.endpoint)
    assert hub_server.resolve(REPO, "v1") == first["revision"]
    moved = publish(NAME, other, REPO, tag="v1", endpoint=hub_server.endpoint, force=True)
    assert hub_server.resolve(REPO, "v1") == moved["revision"] != first["revision"]


def test_publish_dry_run_uploads_nothing_and_mismatched_weights_are_refused(hub_server, user_registry, tmp_path):
    path = _save(_random_model(1), tmp_path / "w.safetensors")
    entry = publish(NAME, path, REPO, dry_run=True, out_dir=tmp_path / "out", endpoint=hub_server.endpoint)
    assert entry["revision"] is None and entry["files"] == ["README.md", "config.json", "model.safetensors", "reference.safetensors"]
    assert hub_server.request_log == []
    meta = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert set(meta) == set(load_file(str(path)))
    bad = load_file(str(path))
    bad.pop("classifier.bias")
    save_file(bad, str(tmp_path / "bad.safetensors"))
    with pytest.raises(StateDictMismatchError, match="classifier.bias"):
        publish(NAME, tmp_path / "bad.safetensors", REPO, dry_run=True)


def test_pinned_revision_ignores_later_commits(published, hub_server, tmp_path):
    model, _ = published
    publish(NAME, _save(_random_model(7), tmp_path / "w7.safetensors"), REPO, tag="v2", endpoint=hub_server.endpoint)
    assert_same_model(zoo.create(NAME, pretrained=True), model)
    latest = zoo.create(f"hf-hub:{REPO}")  # main moved on
    with torch.no_grad():
        assert not torch.allclose(latest(_x()), model.eval()(_x()))


# --- offline --------------------------------------------------------------------------------------
def test_offline_with_warm_cache_makes_no_request(published, hub_server, monkeypatch):
    zoo.create(NAME, pretrained=True)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    hub_server.set_offline(True)
    before = len(hub_server.request_log)
    zoo.create(NAME, pretrained=True)
    assert len(hub_server.request_log) == before


def test_offline_and_uncached_fails_clearly(published, monkeypatch, tmp_path):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OfflineError) as err:
        zoo.create(NAME, pretrained=True, cache_dir=tmp_path / "empty-cache")
    msg = str(err.value)
    assert "not in the cache" in msg and "zoo download" in msg and "ZOO_WEIGHTS_MIRROR" in msg


def test_server_down_and_uncached_fails_clearly(published, hub_server, hub_no_backoff, tmp_path):
    hub_server.set_offline(True)
    with pytest.raises(OfflineError, match="could not be reached"):
        zoo.create(NAME, pretrained=True, cache_dir=tmp_path / "empty-cache")


# --- corrupt, truncated, checksum -----------------------------------------------------------------
@pytest.mark.parametrize("damage", ["corrupt", "truncated"])
def test_damaged_download_is_refused_and_not_deleted(published, hub_server, hub_no_backoff, tmp_path, damage):
    _, entry = published
    data = hub_server.files(REPO, entry["revision"])["model.safetensors"]
    bad = data[:-64] if damage == "truncated" else data[:-64] + bytes(64)
    hub_server.corrupt(REPO, "model.safetensors", bad)
    with pytest.raises(WeightsError) as err:
        zoo.create(NAME, pretrained=True, cache_dir=tmp_path / "c")
    assert "model.safetensors" in str(err.value) or REPO in str(err.value)
    if isinstance(err.value, ChecksumError):
        assert "Nothing was deleted" in str(err.value)
        assert list((tmp_path / "c").rglob("model.safetensors"))


def test_checksum_mismatch_names_both_hashes(published, user_registry):
    _, entry = published
    user_registry(NAME, _weights_entry({**entry, "sha256": "0" * 64}, "v1"))
    with pytest.raises(ChecksumError) as err:
        zoo.create(NAME, pretrained=True)
    assert "0" * 64 in str(err.value) and entry["sha256"] in str(err.value)


def test_a_verified_file_is_hashed_once(published, monkeypatch):
    zoo.create(NAME, pretrained=True)
    calls = []
    monkeypatch.setattr(zoo.files, "sha256_file", lambda p, *a: calls.append(p) or "x")
    zoo.create(NAME, pretrained=True)
    assert calls == []


def test_cached_file_changed_after_verification_is_caught(published):
    zoo.create(NAME, pretrained=True)
    path = W.cached_hub_file(zoo.model_info(NAME).weights["v1"].hub)
    real = path.resolve()
    data = bytearray(real.read_bytes())
    data[-1] ^= 0xFF
    real.write_bytes(bytes(data))
    with pytest.raises(ChecksumError):
        zoo.create(NAME, pretrained=True)


def test_download_force_replaces_a_corrupt_cached_blob(published, capsys):
    """The advice of a corrupt Hub blob is `zoo download NAME.TAG --force`, and following it works: the blob
    itself (the file the cache's symlink points to) is fetched again and replaced."""
    from zoo.cli import main

    model, _ = published
    zoo.create(NAME, pretrained=True)
    blob = W.cached_hub_file(zoo.model_info(NAME).weights["v1"].hub).resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=rf"zoo download {NAME}.v1 --force"):
        zoo.create(NAME, pretrained=True)
    assert main(["download", "--force", f"{NAME}.v1"]) == 0
    capsys.readouterr()
    assert W.cached_hub_file(zoo.model_info(NAME).weights["v1"].hub).resolve().read_bytes() != bytes(data)
    assert_same_model(zoo.create(NAME, pretrained=True), model)


# --- mirrors --------------------------------------------------------------------------------------
def test_mirror_directory_serves_verified_files_offline(published, hub_server, monkeypatch, tmp_path):
    _, entry = published
    mirror = tmp_path / "mirror"
    target = mirror / REPO / entry["revision"] / "model.safetensors"
    target.parent.mkdir(parents=True)
    target.write_bytes(hub_server.files(REPO, entry["revision"])["model.safetensors"])
    monkeypatch.setenv("ZOO_WEIGHTS_MIRROR", str(mirror))
    hub_server.set_offline(True)
    zoo.create(NAME, pretrained=True, cache_dir=tmp_path / "never-used")
    assert not (tmp_path / "never-used").exists()
    target.write_bytes(target.read_bytes()[:-8] + bytes(8))
    with pytest.raises(ChecksumError, match="mirror|sha256"):
        zoo.create(NAME, pretrained=True)


# --- strict loading, heads, user checkpoints ------------------------------------------------------
def test_key_and_shape_mismatches_are_listed_and_nothing_is_loaded(user_registry, tmp_path):
    state = _random_model(1).state_dict()
    state.pop("stem.0.weight")
    state["extra.weight"] = torch.zeros(1)
    state["classifier.weight"] = torch.zeros(9, 8, 1, 1)
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(StateDictMismatchError) as err:
        zoo.create(NAME, checkpoint=tmp_path / "bad.safetensors")
    msg = str(err.value)
    assert "missing keys: stem.0.weight" in msg and "unexpected keys: extra.weight" in msg
    assert "classifier.weight: checkpoint (9, 8, 1, 1) vs model (5, 8, 1, 1)" in msg and "Nothing was loaded" in msg
    model = zoo.create(NAME, checkpoint=tmp_path / "bad.safetensors", strict=False)
    assert not any(p.is_meta for p in model.parameters())
    assert torch.equal(model.aspp.project[0].weight, state["aspp.project.0.weight"])


def test_new_num_classes_reinitialises_only_the_classifier(published):
    model, _ = published
    head = zoo.create(NAME, pretrained=True, num_classes=3)
    assert head.classifier.weight.shape == (3, 8, 1, 1)
    assert head.classifier.weight.abs().sum() > 0  # initialised, not empty memory
    torch.testing.assert_close(head.aspp.convs[0][0].weight, model.aspp.convs[0][0].weight, rtol=0, atol=0)
    assert head(_x()).shape[1] == 3


def test_user_checkpoints_prefixes_directories_and_pickle_opt_in(user_registry, tmp_path):
    model = _random_model(3).eval()
    wrapped = {f"module._orig_mod.{k}": v for k, v in model.state_dict().items()}
    (tmp_path / "dir").mkdir()
    save_file(wrapped, str(tmp_path / "dir" / "model.safetensors"))
    loaded = zoo.create(NAME, checkpoint=tmp_path / "dir", dtype=torch.float64)
    assert loaded.classifier.weight.dtype == torch.float64
    with torch.no_grad():
        torch.testing.assert_close(loaded(_x().double()).float(), model(_x()), rtol=1e-5, atol=1e-5)
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, tmp_path / "ckpt.pth")
    with pytest.raises(WeightsError, match="allow_pickle=True"):
        zoo.create(NAME, checkpoint=tmp_path / "ckpt.pth")
    pickled = zoo.create(NAME, checkpoint=tmp_path / "ckpt.pth", allow_pickle=True)
    assert_same_model(pickled, model)


def test_a_model_loaded_from_a_file_can_be_saved_and_owns_its_tensors(user_registry, tmp_path):
    """float32 weights (the file's dtype, no cast) and int64 BatchNorm counters come from one memory map of
    the file, each in a storage of its own (torch.save refuses one storage viewed as two dtypes, and a
    training run checkpoints with torch.save); tests/test_zero_copy.py checks the rest."""
    import io

    path = _save(_random_model(4), tmp_path / "w.safetensors")
    loaded = zoo.create(NAME, checkpoint=path)
    state = loaded.state_dict()
    assert {v.dtype for v in state.values()} >= {torch.float32, torch.int64}
    owners = [v.untyped_storage().data_ptr() for v in state.values()]
    assert len(set(owners)) == len(owners)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    again = torch.load(buffer, weights_only=True)
    assert all(torch.equal(again[k], v) for k, v in state.items())


def test_truncated_or_missing_checkpoint_files(user_registry, tmp_path):
    path = _save(_random_model(1), tmp_path / "w.safetensors")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        zoo.create(NAME, checkpoint=path)
    with pytest.raises(WeightsError, match="does not exist"):
        zoo.create(NAME, checkpoint=tmp_path / "nope.safetensors")


def test_pretrained_without_weights_or_unknown_tag(user_registry, published):
    with pytest.raises(UnknownModelError, match="no weights tagged 'v9'"):
        zoo.create(f"{NAME}.v9")
    with pytest.raises(UnknownModelError, match="no published weights"):
        zoo.create("cacnet-r101", pretrained=True)
    assert zoo.create(f"{NAME}.v1").weights_tag == "v1"


def test_release_card_describes_the_file_it_ships_with(user_registry, tmp_path):
    """A commit cannot contain its own hash: the released card's row for the published tag gives "this commit"
    and the new file's sha256 and size, not the registry's previous pin; other tags keep theirs."""
    from zoo.cards.publish import write_release

    weights = _weights_entry({"repo": REPO, "revision": "a" * 40, "file": "model.safetensors", "sha256": "b" * 64,
                              "size": 1}, "v1")
    weights["tags"]["v0"] = {**weights["tags"]["v1"], "hub": {**weights["tags"]["v1"]["hub"], "revision": "c" * 40}}
    user_registry(NAME, weights)
    path = _save(_random_model(3), tmp_path / "w.safetensors")

    def weight_rows(folder):
        card = (folder / "README.md").read_text()
        return {line.split("`")[1]: line for line in card.splitlines() if f"`{REPO}`" in line}

    entry = write_release(NAME, path, tmp_path / "out", tag="v1")
    rows = weight_rows(tmp_path / "out")
    assert "@ this commit," in rows["v1"] and f"`{entry['sha256'][:16]}…`" in rows["v1"]
    assert f" {entry['size']:,} B," in rows["v1"] and "aaaaaaaaaaaa" not in rows["v1"]
    assert "@ `cccccccccccc`," in rows["v0"] and "`bbbbbbbbbbbbbbbb…`" in rows["v0"]
    write_release(NAME, path, tmp_path / "untagged")
    untagged = weight_rows(tmp_path / "untagged")
    assert "@ `aaaaaaaaaaaa`," in untagged["v1"] and "this commit" not in "".join(untagged.values())


def test_half_precision_release_loads_as_float32(user_registry, tmp_path):
    model = _random_model(3).eval()
    path = _save(model, tmp_path / "w.safetensors")
    from zoo.cards.publish import write_release

    entry = write_release(NAME, path, tmp_path / "out", dtype="float16")
    stored = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    assert entry["size"] < path.stat().st_size
    loaded = zoo.create(NAME, checkpoint=tmp_path / "out" / "model.safetensors").eval()
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    for k, v in loaded.state_dict().items():
        if v.is_floating_point():
            assert torch.equal(v, stored[k].float()), k
    with torch.no_grad():
        torch.testing.assert_close(loaded(_x()), model(_x()), rtol=2e-2, atol=2e-2)
    reference = load_file(str(tmp_path / "out" / "reference.safetensors"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(reference["input"]), reference["output"])
    with pytest.raises(ValueError, match="storage dtype"):
        write_release(NAME, path, tmp_path / "bad", dtype="int8")


def test_half_precision_release_keeps_tensors_float16_cannot_hold(user_registry, tmp_path):
    model = _random_model(3).eval()
    state = model.state_dict()
    big = next(k for k in state if k.endswith("running_var"))
    state[big] = torch.full_like(state[big], 9.0e4)  # above float16's 65504, as a stem BN on 0..255 inputs
    model.load_state_dict(state)
    path = _save(model, tmp_path / "w.safetensors")
    from zoo.cards.publish import write_release

    entry = write_release(NAME, path, tmp_path / "out", dtype="float16")
    stored = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert entry["kept_original_dtype"] == [big]
    assert stored[big].dtype == torch.float32 and torch.equal(stored[big], state[big])
    assert all(torch.isfinite(v).all() for v in stored.values() if v.is_floating_point())
    assert {v.dtype for k, v in stored.items() if v.is_floating_point() and k != big} == {torch.float16}
    loaded = zoo.create(NAME, checkpoint=tmp_path / "out" / "model.safetensors").eval()
    assert torch.equal(loaded.state_dict()[big], state[big])
