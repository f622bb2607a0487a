"""Independent check of the download path against olah, a third-party Hub mirror serving plain git
repos (tests/support/olah_check.py). Skipped unless ZOO_OLAH_CLI points at an olah-cli executable."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from support.olah_check import OlahMirror, olah  # noqa: F401  (fixture)

REPO = "zoo-test/tiny"
WEIGHTS = bytes(range(256)) * 3 + b"\x00\xffzoo"


def sha256_file(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_olah_serves_pinned_download(olah: OlahMirror, tmp_path: Path) -> None:
    sha = olah.add_repo(REPO, {"model.bin": WEIGHTS, "README.md": b"# tiny\n"}, tag="v1")
    cache = tmp_path / "hf-cache"
    path = hf_hub_download(REPO, "model.bin", revision=sha, endpoint=olah.endpoint, cache_dir=cache, token=False)
    assert sha256_file(path) == hashlib.sha256(WEIGHTS).hexdigest()
    assert f"/snapshots/{sha}/" in path


def test_olah_branch_tag_listing_and_later_commit(olah: OlahMirror, tmp_path: Path) -> None:
    first = olah.add_repo(REPO, {"model.bin": WEIGHTS}, tag="v1")
    second = olah.add_repo(REPO, {"model.bin": b"newer weights"})
    cache = tmp_path / "hf-cache"

    def get(revision: str) -> bytes:
        return Path(hf_hub_download(REPO, "model.bin", revision=revision, endpoint=olah.endpoint,
                                    cache_dir=cache, token=False)).read_bytes()

    assert get(first) == WEIGHTS and get("v1") == WEIGHTS  # a pin does not move
    assert get("main") == b"newer weights"
    api = HfApi(endpoint=olah.endpoint, token=False)
    refs = api.list_repo_refs(REPO)
    assert {(b.name, b.target_commit) for b in refs.branches} == {("main", second)}
    assert {(t.name, t.target_commit) for t in refs.tags} == {("v1", first)}
    assert api.list_repo_files(REPO, revision=first) == ["model.bin"]
    with pytest.raises(EntryNotFoundError):  # olah 0.5.4 answers X-Error-Code EntryNotFound
        hf_hub_download(REPO, "absent.bin", revision=first, endpoint=olah.endpoint, cache_dir=cache, token=False)


def test_zoo_create_downloads_registry_weights_through_olah(olah: OlahMirror, user_registry, tmp_path: Path, monkeypatch) -> None:
    """zoo's own resolution path (registry pin -> hf_hub_download -> sha256 -> meta load) against olah."""
    import torch
    from safetensors.torch import save_file

    import zoo

    torch.manual_seed(0)
    model = zoo.create("test-small-segnet")
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    data = path.read_bytes()
    sha = olah.add_repo("zoo-test/olah-segnet", {"model.safetensors": data})
    user_registry("test-small-segnet", {"default": "olah", "tags": {"olah": {
        "hub": {"repo": "zoo-test/olah-segnet", "revision": sha, "file": "model.safetensors",
                "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}, "source": "test", "license": "apache-2.0",
        "metrics": [{"dataset": "none", "split": "none", "metric": "none", "value": 0, "measured": "test"}]}}})
    monkeypatch.setenv("HF_ENDPOINT", olah.endpoint)
    loaded = zoo.create("test-small-segnet", pretrained=True, cache_dir=tmp_path / "cache")
    x = torch.randn(1, 3, 33, 41)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-6)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
