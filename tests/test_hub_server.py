"""The in-memory Hub server (tests/support/hub_server.py) driven by the REAL huggingface_hub client.

Every test passes ``endpoint=`` explicitly: huggingface_hub reads HF_ENDPOINT only at import time.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request

import huggingface_hub.constants as hf_constants
import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils._runtime import is_xet_available
from support.hub_server import HubServer, hf_cache, hub_no_backoff, hub_server  # noqa: F401  (fixtures)

REPO = "zoo-test/tiny"
WEIGHTS = bytes(range(256)) * 4 + b"\x00\xff"  # binary, not valid UTF-8
README = b"---\nlicense: mit\n---\n# tiny\n"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture
def api(hub_server: HubServer) -> HfApi:
    return HfApi(endpoint=hub_server.endpoint, token=False)


@pytest.fixture
def repo(api: HfApi, hub_server: HubServer) -> str:
    """REPO with WEIGHTS at model.bin and README.md on main, tagged v1; returns the v1 commit sha."""
    api.create_repo(REPO)
    api.upload_file(path_or_fileobj=WEIGHTS, path_in_repo="model.bin", repo_id=REPO)
    info = api.create_commit(REPO, [CommitOperationAdd("README.md", README)], commit_message="card")
    api.create_tag(REPO, tag="v1")
    return info.oid


def download(server: HubServer, filename: str = "model.bin", **kwargs) -> str:
    return hf_hub_download(REPO, filename, endpoint=server.endpoint, token=False, **kwargs)


# ------------------------------------------------------------------------------------------ upload side
def test_create_repo_exist_ok(api: HfApi, hub_server: HubServer) -> None:
    url = api.create_repo(REPO)
    assert url.repo_id == REPO and url.endpoint == hub_server.endpoint
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo(REPO)
    assert err.value.response.status_code == 409
    assert api.create_repo(REPO, exist_ok=True).repo_id == REPO
    assert api.list_repo_files(REPO) == [".gitattributes"]  # like the Hub's initial commit


@pytest.mark.parametrize("disable_xet", [False, True], ids=["xet-default", "HF_HUB_DISABLE_XET"])
def test_upload_then_download_by_branch_tag_and_sha(api, hub_server, hf_cache, monkeypatch, disable_xet) -> None:
    # huggingface_hub 2.4.0 reads the env var once into constants.HF_HUB_DISABLE_XET and every user
    # (is_xet_available, file_download, _shared_blobs) reads that attribute at call time.
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_XET", disable_xet)
    if disable_xet:
        assert not is_xet_available()
    api.create_repo(REPO)
    first = api.upload_file(path_or_fileobj=WEIGHTS, path_in_repo="model.bin", repo_id=REPO)
    card = api.create_commit(REPO, [CommitOperationAdd("README.md", README)], commit_message="add card")
    assert first.oid != card.oid and len(card.oid) == 40
    assert ("POST", "/api/validate-yaml") in hub_server.request_log  # README.md goes through validation
    assert hub_server.files(REPO)["model.bin"] == WEIGHTS and hub_server.files(REPO)["README.md"] == README
    assert not any("lfs" in path or "xet" in path for _, path in hub_server.request_log)

    api.create_tag(REPO, tag="v1", revision=first.oid)
    refs = api.list_repo_refs(REPO)
    assert [(b.name, b.target_commit) for b in refs.branches] == [("main", card.oid)]
    assert [(t.name, t.ref, t.target_commit) for t in refs.tags] == [("v1", "refs/tags/v1", first.oid)]
    assert sorted(api.list_repo_files(REPO)) == [".gitattributes", "README.md", "model.bin"]
    assert api.list_repo_files(REPO, revision="v1") == [".gitattributes", "model.bin"]

    for revision, commit in (("main", card.oid), ("v1", first.oid), (first.oid, first.oid)):
        path = download(hub_server, revision=revision)
        assert read(path) == WEIGHTS and f"/snapshots/{commit}/" in path
    assert read(download(hub_server, "README.md")) == README
    # ETag = sha256 of the content, so the cache blob is named after it
    assert (hf_cache / f"models--{REPO.replace('/', '--')}" / "blobs" / sha256(WEIGHTS)).is_file()


def test_tag_and_branch_conflicts_and_quoted_revisions(api, hub_server, repo, hf_cache) -> None:
    with pytest.raises(HfHubHTTPError) as err:
        api.create_tag(REPO, tag="v1")
    assert err.value.response.status_code == 409
    api.create_branch(REPO, branch="dev/x", revision="v1")  # a slash: sent URL-quoted as dev%2Fx
    with pytest.raises(HfHubHTTPError):
        api.create_branch(REPO, branch="dev/x")
    api.create_branch(REPO, branch="dev/x", exist_ok=True)
    new = api.upload_file(path_or_fileobj=b"dev", path_in_repo="model.bin", repo_id=REPO, revision="dev/x")
    assert read(download(hub_server, revision="dev/x")) == b"dev"
    assert read(download(hub_server, revision="refs/heads/dev/x")) == b"dev"
    assert read(download(hub_server, revision="main")) == WEIGHTS
    assert api.model_info(REPO, revision="dev/x").sha == new.oid
    assert api.model_info(REPO).sha == hub_server.resolve(REPO, "main")
    api.delete_tag(REPO, tag="v1")
    assert api.list_repo_refs(REPO).tags == []


def test_commit_deletes_and_parent_commit(api, hub_server, repo) -> None:
    ops = [CommitOperationAdd(f"sub/{n}.txt", n.encode()) for n in "abc"]
    added = api.create_commit(REPO, ops + [CommitOperationAdd("sub/deep/d.txt", b"d")], commit_message="many")
    tree = {e.path for e in api.list_repo_tree(REPO, path_in_repo="sub")}
    assert tree == {"sub/a.txt", "sub/b.txt", "sub/c.txt", "sub/deep"}  # not recursive
    api.create_commit(REPO, [CommitOperationDelete("sub/a.txt")], commit_message="rm a")
    api.create_commit(REPO, [CommitOperationDelete("sub/deep/")], commit_message="rm folder")
    assert sorted(p for p in api.list_repo_files(REPO) if p.startswith("sub/")) == ["sub/b.txt", "sub/c.txt"]
    with pytest.raises(EntryNotFoundError):
        api.create_commit(REPO, [CommitOperationDelete("nope.txt")], commit_message="rm nothing")
    with pytest.raises(HfHubHTTPError) as err:  # stale parentCommit is refused
        api.create_commit(REPO, [CommitOperationAdd("x", b"x")], commit_message="x", parent_commit=added.oid)
    assert err.value.response.status_code == 412
    head = hub_server.resolve(REPO)
    assert api.create_commit(REPO, [CommitOperationAdd("x", b"x")], commit_message="x", parent_commit=head).oid
    # unchanged file: preupload returns its git oid and the client skips the empty commit
    before = hub_server.resolve(REPO)
    api.upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id=REPO)
    assert hub_server.resolve(REPO) == before


# ------------------------------------------------------------------------------------------ download side
def test_pinned_sha_is_immutable(api, hub_server, repo, hf_cache) -> None:
    api.upload_file(path_or_fileobj=b"new weights", path_in_repo="model.bin", repo_id=REPO)
    assert read(download(hub_server, revision=repo)) == WEIGHTS  # old commit still serves old bytes
    assert read(download(hub_server, revision="v1")) == WEIGHTS
    assert read(download(hub_server, revision="main")) == b"new weights"


def test_cached_pinned_download_makes_no_request(hub_server, repo, hf_cache) -> None:
    first = download(hub_server, revision=repo)
    hub_server.request_log.clear()
    assert download(hub_server, revision=repo) == first
    assert hub_server.request_log == []
    download(hub_server, revision="main")  # a branch is re-checked: one HEAD
    assert hub_server.request_log == [("HEAD", f"/{REPO}/resolve/main/model.bin")]


def test_hf_hub_offline(hub_server, repo, hf_cache, monkeypatch) -> None:
    cached = download(hub_server, revision="v1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    hub_server.request_log.clear()
    assert download(hub_server, revision="v1") == cached
    assert download(hub_server, revision=repo) == cached
    with pytest.raises(LocalEntryNotFoundError) as err:
        download(hub_server, "README.md", revision="v1")
    assert isinstance(err.value, EntryNotFoundError)
    assert hub_server.request_log == []


@pytest.mark.parametrize("how", ["refuse", "503"])
def test_server_down_falls_back_to_cache(hub_server, repo, hf_cache, hub_no_backoff, how) -> None:
    cached = download(hub_server, revision="main")
    hub_server.set_offline(True, how=how)
    hub_server.request_log.clear()
    assert download(hub_server, revision="main") == cached  # cached: one try, no back-off
    assert hub_no_backoff == []
    with pytest.raises(LocalEntryNotFoundError):  # not cached: the client retries, then gives up
        download(hub_server, "README.md", revision="main")
    assert len(hub_no_backoff) == 5
    if how == "503":  # the server still sees (and logs) the requests it refuses
        assert hub_server.request_log.count(("HEAD", f"/{REPO}/resolve/main/model.bin")) == 1
        assert hub_server.request_log.count(("HEAD", f"/{REPO}/resolve/main/README.md")) > 5
    else:
        assert hub_server.request_log == []
    hub_server.set_offline(False)
    assert read(download(hub_server, "README.md", revision="main")) == README


def test_missing_entry_revision_and_repo(hub_server, repo, hf_cache) -> None:
    with pytest.raises(EntryNotFoundError):
        download(hub_server, "missing.bin")
    with pytest.raises(RevisionNotFoundError):
        download(hub_server, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        download(hub_server, revision="0" * 40)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("zoo-test/absent", "model.bin", endpoint=hub_server.endpoint, token=False)


def test_corrupt_body_keeps_metadata(hub_server, repo, hf_cache, tmp_path) -> None:
    bad = bytes(len(WEIGHTS))  # same size, different bytes: only a sha256 check can notice
    hub_server.corrupt(REPO, "model.bin", bad, revision="v1")
    path = download(hub_server, revision="v1")
    assert read(path) == bad and sha256(read(path)) != sha256(WEIGHTS)
    # the cache names the blob after the ETag (the true sha256) although it holds the bad bytes
    assert (hf_cache / "models--zoo-test--tiny" / "blobs" / sha256(WEIGHTS)).read_bytes() == bad
    api = HfApi(endpoint=hub_server.endpoint, token=False)
    api.upload_file(path_or_fileobj=b"other", path_in_repo="other.txt", repo_id=REPO)  # main moves on
    fresh = download(hub_server, revision="main", cache_dir=tmp_path / "fresh-cache")
    assert read(fresh) == WEIGHTS  # the corruption was pinned to v1's commit only


def test_truncated_body_is_rejected_by_client(hub_server, repo, hf_cache) -> None:
    hub_server.corrupt(REPO, "model.bin", WEIGHTS[:100])  # every revision
    with pytest.raises(OSError):
        download(hub_server, revision=repo)
    hub_server.corrupt(REPO, "model.bin", None)
    assert read(download(hub_server, revision=repo)) == WEIGHTS


def test_range_requests(hub_server, repo) -> None:
    url = f"{hub_server.endpoint}/{REPO}/resolve/v1/model.bin"

    def get(range_header: str) -> tuple[int, bytes, str | None]:
        req = urllib.request.Request(url, headers={"Range": range_header})
        try:
            with urllib.request.urlopen(req) as resp:
                return resp.status, resp.read(), resp.headers.get("Content-Range")
        except urllib.error.HTTPError as err:
            return err.code, b"", err.headers.get("Content-Range")

    assert get("bytes=10-19") == (206, WEIGHTS[10:20], f"bytes 10-19/{len(WEIGHTS)}")
    assert get("bytes=1000-") == (206, WEIGHTS[1000:], f"bytes 1000-{len(WEIGHTS) - 1}/{len(WEIGHTS)}")
    assert get("bytes=-5") == (206, WEIGHTS[-5:], f"bytes {len(WEIGHTS) - 5}-{len(WEIGHTS) - 1}/{len(WEIGHTS)}")
    assert get(f"bytes={len(WEIGHTS)}-")[0] == 416


def test_seeding_helpers_and_headers(hub_server, hf_cache) -> None:
    assert hub_server.create_repo("zoo-test/seeded") and not hub_server.create_repo("zoo-test/seeded")
    sha = hub_server.commit("zoo-test/seeded", {"a/w.bin": b"abc"}, message="seed")
    hub_server.create_tag("zoo-test/seeded", "t", revision=sha)
    req = urllib.request.Request(f"{hub_server.endpoint}/zoo-test/seeded/resolve/t/a%2Fw.bin", method="HEAD")
    with urllib.request.urlopen(req) as resp:
        assert resp.headers["X-Repo-Commit"] == sha
        assert resp.headers["ETag"] == f'"{sha256(b"abc")}"' and resp.headers["Content-Length"] == "3"
    path = hf_hub_download("zoo-test/seeded", "a/w.bin", revision="t", endpoint=hub_server.endpoint)
    assert read(path) == b"abc"
    missing = urllib.request.Request(f"{hub_server.endpoint}/zoo-test/seeded/resolve/t/none", method="HEAD")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(missing)
    assert err.value.code == 404 and err.value.headers["X-Error-Code"] == "EntryNotFound"
    assert err.value.headers["X-Repo-Commit"] == sha
