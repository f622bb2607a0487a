"""An in-memory Hugging Face Hub server for tests (stdlib only).

It speaks the subset of the Hub HTTP API that the real ``huggingface_hub`` client (checked with 2.4.0)
uses to create repositories, commit files, tag/branch, list files/refs and download files. The routes
are those dispatched by ``HubServer.handle``; tests/test_hub_server.py drives each one with the real
client, including the headers it relies on (X-Repo-Commit, ETag, Content-Length, X-Error-Code).

Point the client at it EXPLICITLY: ``HfApi(endpoint=server.endpoint)``,
``hf_hub_download(..., endpoint=server.endpoint)``. ``HF_ENDPOINT`` is read by huggingface_hub once at
import time, so setting it inside a test does not redirect the running process; the ``hub_server``
fixture sets it only so that subprocesses started by a test reach the server.

Model of the data: a repo is a set of commits, each holding a full snapshot ``{path: bytes}``, plus
branch and tag names pointing at commit shas (unique 40-hex). A new repo starts, as on the Hub, with
one commit holding ``.gitattributes``. Uploads are always answered with ``uploadMode: "regular"``, so
no LFS or Xet route is ever needed. A file's ETag is the quoted sha256 of its content (what the Hub
sends for LFS files), so a download lands in the cache as ``blobs/<sha256>``.

Test hooks: ``request_log`` (every request as ``(method, path)``), ``corrupt()`` (serve other bytes in a
download body while all metadata still describes the true file), ``set_offline()`` (refuse
connections or answer 503), and seeding helpers (``create_repo``, ``commit``, ``create_tag``,
``resolve``, ``files``) that bypass HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
_GITATTRIBUTES = b"*.bin filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
_counter = itertools.count()  # module-wide, so shas stay unique across servers in one process


def git_blob_sha1(data: bytes) -> str:
    """Git's blob id of ``data`` (the Hub's ``oid`` for a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class _Commit:
    sha: str
    parent: str | None
    summary: str
    date: str
    files: dict[str, bytes]


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    commits: dict[str, _Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> str | None:
        """Commit sha of a branch, tag, ``refs/heads/x`` / ``refs/tags/x`` or full commit sha."""
        for prefix, table in (("refs/heads/", self.branches), ("refs/tags/", self.tags)):
            if revision.startswith(prefix) and revision[len(prefix):] in table:
                return table[revision[len(prefix):]]
        if revision in self.branches:
            return self.branches[revision]
        if revision in self.tags:
            return self.tags[revision]
        return revision if _SHA_RE.match(revision) and revision in self.commits else None


class HubError(Exception):
    """An HTTP error answer: status, ``X-Error-Code`` and extra headers."""

    def __init__(self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class HubServer:
    """Threaded in-memory Hub on ``127.0.0.1`` with an ephemeral port; see the module docstring."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.request_log: list[tuple[str, str]] = []
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._corrupt: dict[tuple[str, str, str, str | None], bytes] = {}
        self._offline: str | None = None
        self._lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle
    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "HubServer":
        handler = type("_BoundHandler", (_Handler,), {"hub": self})
        self._httpd = ThreadingHTTPServer((self.host, self.port), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]  # keep the port across set_offline("refuse") restarts
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = self._thread = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- test hooks
    def set_offline(self, offline: bool = True, how: str = "refuse") -> None:
        """Make every request fail: ``how="refuse"`` closes the listening socket (the client sees a
        connection error), ``how="503"`` answers 503 (the request is still logged). ``False`` restores
        service on the same port."""
        if how not in ("refuse", "503"):
            raise ValueError(f"how must be 'refuse' or '503', got {how!r}")
        if offline and self._offline is None:
            self._offline = how
            if how == "refuse":
                self.stop()
        elif not offline and self._offline is not None:
            if self._offline == "refuse":
                self.start()
            self._offline = None

    def corrupt(self, repo_id: str, path: str, data: bytes | None, revision: str | None = None,
                repo_type: str = "model") -> None:
        """Serve ``data`` as the GET body of ``path`` (at ``revision``, resolved now; every commit when
        None). Headers (ETag, X-Repo-Commit, HEAD's Content-Length) still describe the true file.
        ``data=None`` removes the corruption."""
        sha = None if revision is None else self.resolve(repo_id, revision, repo_type)
        key = (repo_type, repo_id, path, sha)
        with self._lock:
            if data is None:
                self._corrupt.pop(key, None)
            else:
                self._corrupt[key] = bytes(data)

    # ----------------------------------------------------------------- seeding (no HTTP)
    def create_repo(self, repo_id: str, repo_type: str = "model") -> bool:
        """Create an empty repo (initial commit with ``.gitattributes`` on ``main``); False if it exists."""
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                return False
            repo = self._repos[(repo_type, repo_id)] = _Repo(repo_type, repo_id)
            self._add_commit(repo, "main", {".gitattributes": _GITATTRIBUTES}, [], "initial commit", None)
            return True

    def commit(self, repo_id: str, files: dict[str, bytes | None], message: str = "commit",
               branch: str = "main", repo_type: str = "model") -> str:
        """Commit ``files`` to ``branch`` (a None value deletes the path); returns the new commit sha."""
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            adds = {p: d for p, d in files.items() if d is not None}
            return self._add_commit(repo, branch, adds, [p for p, d in files.items() if d is None], message, None)

    def create_tag(self, repo_id: str, tag: str, revision: str = "main", repo_type: str = "model") -> str:
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            repo.tags[tag] = self._resolve(repo, revision)
            return repo.tags[tag]

    def resolve(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> str:
        """Commit sha that ``revision`` points at now."""
        with self._lock:
            return self._resolve(self._get_repo(repo_type, repo_id), revision)

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            return dict(repo.commits[self._resolve(repo, revision)].files)

    # ----------------------------------------------------------------- model helpers
    def _get_repo(self, repo_type: str, repo_id: str) -> _Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "RepoNotFound", f"Repository Not Found: {repo_type} {repo_id}")
        return repo

    @staticmethod
    def _resolve(repo: _Repo, revision: str) -> str:
        sha = repo.resolve(revision)
        if sha is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return sha

    def _add_commit(self, repo: _Repo, branch: str, adds: dict[str, bytes], deletes: list[str],
                    summary: str, parent_commit: str | None) -> str:
        if repo.branches and branch not in repo.branches:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {branch} is not a branch")
        head = repo.branches.get(branch)
        if parent_commit is not None and parent_commit != head:
            raise HubError(412, None, "A commit has happened since. Please refresh and try again.")
        files = dict(repo.commits[head].files) if head else {}
        for path in deletes:
            if path.endswith("/"):  # deletedFolder
                gone = [p for p in files if p.startswith(path)]
            else:
                gone = [path] if path in files else []
            if not gone:
                raise HubError(404, "EntryNotFound", f"A file with this name doesn't exist: {path}")
            for p in gone:
                del files[p]
        files.update(adds)
        seed = f"{repo.repo_type}/{repo.repo_id}\0{head}\0{summary}\0{next(_counter)}\0{time.time_ns()}"
        sha = hashlib.sha1(seed.encode()).hexdigest()
        date = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        repo.commits[sha] = _Commit(sha, head, summary, date, files)
        repo.branches[branch] = sha
        return sha

    def _split_repo(self, repo_type: str, segs: list[str]) -> tuple[str, list[str]]:
        """Split ``org/name/rest...`` (or a legacy single-segment id) into repo id and the rest."""
        if len(segs) >= 2 and (repo_type, f"{segs[0]}/{segs[1]}") in self._repos:
            return f"{segs[0]}/{segs[1]}", segs[2:]
        if segs and (repo_type, segs[0]) in self._repos:
            return segs[0], segs[1:]
        raise HubError(404, "RepoNotFound", f"Repository Not Found: {'/'.join(segs[:2])}")

    def _repo_url(self, repo: _Repo) -> str:
        return f"{self.endpoint}/{_URL_PREFIX[repo.repo_type]}{repo.repo_id}"

    # ----------------------------------------------------------------- routing
    def handle(self, req: "_Handler") -> None:
        method = req.command
        self.request_log.append((method, req.path))
        body = req.read_body()
        if self._offline is not None:
            raise HubError(503, None, "Service Unavailable (HubServer.set_offline)")
        url = urlsplit(req.path)
        query = parse_qs(url.query)
        segs = [unquote(s) for s in url.path.strip("/").split("/")]  # split first: refs%2Fpr%2F1 stays one
        with self._lock:
            if segs[0] == "api" and method == "POST" and segs[1:] == ["repos", "create"]:
                return self._api_create(req, json.loads(body or b"{}"))
            if segs[0] == "api" and method == "POST" and segs[1:] == ["validate-yaml"]:
                return req.send_json({"errors": [], "warnings": []})
            if segs[0] == "api" and len(segs) >= 3 and segs[1] in REPO_TYPES:
                repo_id, rest = self._split_repo(REPO_TYPES[segs[1]], segs[2:])
                repo = self._repos[(REPO_TYPES[segs[1]], repo_id)]
                return self._api_repo(req, method, repo, rest, query, body)
            repo_type = REPO_TYPES.get(segs[0]) if segs[0] in ("datasets", "spaces") else "model"
            parts = segs[1:] if segs[0] in ("datasets", "spaces") else segs
            if method in ("GET", "HEAD") and "resolve" in parts:
                repo_id, rest = self._split_repo(repo_type, parts)
                if len(rest) >= 3 and rest[0] == "resolve":
                    return self._resolve_file(req, self._repos[(repo_type, repo_id)], rest[1], "/".join(rest[2:]))
        raise HubError(404, None, f"HubServer: no route for {method} {url.path}")

    def _api_create(self, req: "_Handler", payload: dict) -> None:
        repo_type = payload.get("type") or "model"
        org, name = payload.get("organization"), payload["name"]
        repo_id = f"{org}/{name}" if org else name
        created = self.create_repo(repo_id, repo_type)
        url = self._repo_url(self._repos[(repo_type, repo_id)])
        if not created:
            return req.send_json({"error": "You already created this model repo", "url": url}, status=409)
        req.send_json({"url": url, "name": repo_id, "id": repo_id})

    def _api_repo(self, req: "_Handler", method: str, repo: _Repo, rest: list[str], query: dict,
                  body: bytes) -> None:
        action = rest[0] if rest else ""
        if method == "GET" and action in ("", "revision"):
            sha = self._resolve(repo, rest[1] if action else "main")
            return req.send_json(self._info(repo, sha))
        if method == "GET" and action == "tree" and len(rest) >= 2:
            sha = self._resolve(repo, rest[1])
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            return req.send_json(self._tree(repo.commits[sha], "/".join(rest[2:]), recursive))
        if method == "GET" and action == "refs":
            def refs(table: dict[str, str], kind: str) -> list[dict]:
                return [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": s} for n, s in sorted(table.items())]
            return req.send_json({"branches": refs(repo.branches, "heads"), "tags": refs(repo.tags, "tags"),
                                  "converts": [], "pullRequests": []})
        if method == "POST" and action == "preupload" and len(rest) == 2:
            files = repo.commits[self._resolve(repo, rest[1])].files
            answer = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                       "oid": git_blob_sha1(files[f["path"]]) if f["path"] in files else None}
                      for f in json.loads(body)["files"]]
            return req.send_json({"files": answer})
        if method == "POST" and action == "commit" and len(rest) == 2:
            return self._api_commit(req, repo, rest[1], body)
        if method == "POST" and action == "tag" and len(rest) == 2:
            tag = json.loads(body)["tag"]
            if tag in repo.tags:
                raise HubError(409, None, f"Tag {tag} already exists")
            repo.tags[tag] = self._resolve(repo, rest[1])
            return req.send_json({})
        if method == "POST" and action == "branch" and len(rest) == 2:
            if rest[1] in repo.branches:
                raise HubError(409, None, f"Branch {rest[1]} already exists")
            start = json.loads(body or b"{}").get("startingPoint") or "main"
            repo.branches[rest[1]] = self._resolve(repo, start)
            return req.send_json({})
        if method == "DELETE" and action in ("tag", "branch") and len(rest) == 2:
            table = repo.tags if action == "tag" else repo.branches
            if table.pop(rest[1], None) is None:
                raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rest[1]}")
            return req.send_json({})
        raise HubError(404, None, f"HubServer: no route for {method} /api/.../{'/'.join(rest)}")

    def _api_commit(self, req: "_Handler", repo: _Repo, branch: str, body: bytes) -> None:
        header: dict = {}
        adds: dict[str, bytes] = {}
        deletes: list[str] = []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubError(400, None, f"unsupported encoding {value.get('encoding')!r}")
                adds[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                deletes.append(value["path"])
            elif key == "deletedFolder":
                deletes.append(value["path"].rstrip("/") + "/")
            else:  # lfsFile / copies never happen with uploadMode "regular"
                raise HubError(400, None, f"HubServer does not support commit operation {key!r}")
        sha = self._add_commit(repo, branch, adds, deletes, header.get("summary", ""), header.get("parentCommit"))
        req.send_json({"commitUrl": f"{self._repo_url(repo)}/commit/{sha}", "commitOid": sha,
                       "pullRequestUrl": None})

    def _info(self, repo: _Repo, sha: str) -> dict:
        commit = repo.commits[sha]
        return {"id": repo.repo_id, "modelId": repo.repo_id, "sha": sha, "private": False, "disabled": False,
                "gated": False, "tags": [], "lastModified": commit.date,
                "siblings": [{"rfilename": p} for p in sorted(commit.files)]}

    @staticmethod
    def _tree(commit: _Commit, path: str, recursive: bool) -> list[dict]:
        prefix = path.rstrip("/") + "/" if path else ""
        if path and not any(p.startswith(prefix) for p in commit.files):
            raise HubError(404, "EntryNotFound", f"{path} does not exist on revision {commit.sha}")
        entries: dict[str, dict] = {}
        for p, data in sorted(commit.files.items()):
            if not p.startswith(prefix):
                continue
            parts = p[len(prefix):].split("/")
            for depth in range(1, len(parts)):  # directories on the way
                d = prefix + "/".join(parts[:depth])
                entries.setdefault(d, {"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(),
                                       "size": 0, "path": d})
                if not recursive:
                    break
            if recursive or len(parts) == 1:
                entries[p] = {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": p}
        return list(entries.values())

    def _resolve_file(self, req: "_Handler", repo: _Repo, revision: str, path: str) -> None:
        sha = self._resolve(repo, revision)
        files = repo.commits[sha].files
        if path not in files:
            raise HubError(404, "EntryNotFound", f"Entry not found: {path}", {"X-Repo-Commit": sha})
        data = files[path]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                   "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if req.command == "HEAD":
            return req.send(200, b"", {**headers, "Content-Length": str(len(data))}, head=True)
        body = self._corrupt.get((repo.repo_type, repo.repo_id, path, sha),
                                 self._corrupt.get((repo.repo_type, repo.repo_id, path, None), data))
        match = _RANGE_RE.match(req.headers.get("Range", "").strip())
        if match and any(match.groups()):
            start, end = match.groups()
            first = int(start) if start else max(len(body) - int(end), 0)
            last = min(int(end), len(body) - 1) if start and end else len(body) - 1
            if first >= len(body) or first > last:
                raise HubError(416, None, "Range Not Satisfiable", {"Content-Range": f"bytes */{len(body)}"})
            headers["Content-Range"] = f"bytes {first}-{last}/{len(body)}"
            return req.send(206, body[first:last + 1], headers)
        req.send(200, body, headers)


class _Handler(BaseHTTPRequestHandler):
    """One request; HTTP/1.0 so every connection closes (set_offline("refuse") then bites at once)."""

    hub: HubServer
    protocol_version = "HTTP/1.0"

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send(self, status: int, body: bytes, headers: dict[str, str], head: bool = False) -> None:
        self.send_response(status)
        headers.setdefault("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def send_json(self, obj: object, status: int = 200) -> None:
        self.send(status, json.dumps(obj).encode(), {"Content-Type": "application/json"})

    def _dispatch(self) -> None:
        try:
            self.hub.handle(self)
        except HubError as err:
            headers = {"Content-Type": "application/json", "X-Error-Message": err.message, **err.headers}
            if err.code:
                headers["X-Error-Code"] = err.code
            self.send(err.status, json.dumps({"error": err.message}).encode(), headers, head=self.command == "HEAD")
        except Exception as err:  # a bug in the server: answer 500 rather than hanging the client
            self.send(500, json.dumps({"error": f"HubServer bug: {err!r}"}).encode(),
                      {"Content-Type": "application/json"}, head=self.command == "HEAD")
            raise

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass


# --------------------------------------------------------------------- pytest fixtures
@pytest.fixture
def hub_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A started :class:`HubServer`, stopped after the test. Pass ``endpoint=hub_server.endpoint`` to
    the client; HF_ENDPOINT is set too, but only subprocesses see it (huggingface_hub reads it at import)."""
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        yield server


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HF cache dir, made the client's default (``constants.HF_HUB_CACHE``, read at call time)
    and exported as HF_HUB_CACHE / HF_HOME for subprocesses. Passing ``cache_dir=`` explicitly also works."""
    import huggingface_hub.constants as hf_constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    return cache


@pytest.fixture
def hub_no_backoff(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Skip huggingface_hub's retry sleeps (1+2+4+8+8 s when the server is down and nothing is cached);
    returns the list of waits the client asked for. Patches ``huggingface_hub.utils._http.time``."""
    import types

    import huggingface_hub.utils._http as hf_http

    waits: list[float] = []
    monkeypatch.setattr(hf_http, "time", types.SimpleNamespace(sleep=waits.append))
    return waits
