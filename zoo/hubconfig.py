"""``config.json`` of a repository published with ``zoo publish``: written and read here only.

The file is the registry entry minus its weights, plus ``weights_file`` and the ``weights_sha256`` /
``weights_size`` of that file, so that ``zoo.create("hf-hub:ORG/REPO@REV")`` verifies what it downloads
as it does for registry weights.
"""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

from zoo.errors import ChecksumError, UnknownModelError, WeightsError
from zoo.io import write_atomic
from zoo.registry import ModelInfo, parse_entry, thaw

HUB_CONFIG = "config.json"
HUB_WEIGHTS = "model.safetensors"
_HF_HUB = re.compile(r"^hf-hub:(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<rev>[^\s]+))?$")
_REVISION = re.compile(r"^(?!.*\.\.)(?!/)(?!.*//)(?!.*/$)[A-Za-z0-9._/-]{1,128}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_NOT_ENTRY = {"name", "zoo_version", "weights_file", "weights_sha256", "weights_size"}


def parse_hf_hub(name: str, revision: str | None = None) -> tuple[str, str | None] | None:
    """``("ORG/REPO", REV or None)`` for an ``hf-hub:`` id, None for other names; bad ids and revisions raise."""
    if not name.startswith("hf-hub:"):
        return None
    m = _HF_HUB.match(name)
    if not m:
        raise UnknownModelError(f"{name!r}: use 'hf-hub:ORG/REPO' or 'hf-hub:ORG/REPO@REVISION'")
    rev = revision or m["rev"]
    if rev is not None and (not _REVISION.match(rev) or any(ord(ch) < 32 for ch in rev)):
        raise UnknownModelError(f"{name!r}: revision {rev!r} is not a commit sha, tag or branch name "
                                "(letters, digits, '.', '_', '-', single '/' between parts, no '..')")
    return m["repo"], rev


def config_for(info: ModelInfo, *, weights_sha256: str, weights_size: int) -> dict[str, Any]:
    """The ``config.json`` of a release of ``info`` whose weights file has this sha256 and size."""
    from zoo._version import __version__

    return {
        "name": info.name,
        "zoo_version": __version__,
        "task": info.task,
        "arch": info.arch,
        "args": thaw(info.args),
        "classifier": list(info.classifier),
        "paper": {k: v for k, v in vars(info.paper).items() if v is not None},
        "license": info.license,
        "card": info.card,
        "input_size": list(info.input_size),
        "transforms": info.transforms.to_dict(),
        "postprocess": info.postprocess.to_dict(),
        "exportable": info.exportable,
        "weights_file": HUB_WEIGHTS,
        "weights_sha256": weights_sha256,
        "weights_size": weights_size,
    }


def write_config(path: Path, info: ModelInfo, *, weights_sha256: str, weights_size: int) -> None:
    write_atomic(path, json.dumps(config_for(info, weights_sha256=weights_sha256, weights_size=weights_size), indent=2) + "\n")


def read_config(path: Path, repo: str) -> tuple[ModelInfo, dict[str, Any]]:
    """The entry a ``config.json`` describes, and its weights fields (file, sha256, size)."""
    where = f"hf-hub:{repo}/{HUB_CONFIG}"
    try:
        cfg = json.loads(Path(path).read_text())
    except ValueError as exc:
        raise WeightsError(f"hf-hub:{repo}: {HUB_CONFIG} is not valid JSON ({exc})") from None
    if not isinstance(cfg, dict):
        raise WeightsError(f"{where}: must be a JSON object")
    entry = {k: v for k, v in cfg.items() if k not in _NOT_ENTRY}
    entry["weights"] = {"default": None, "tags": {}}
    info = parse_entry(cfg.get("name", "hub-model"), entry, source=where)
    return info, {"file": cfg.get("weights_file", HUB_WEIGHTS), "sha256": cfg.get("weights_sha256"),
                  "size": cfg.get("weights_size")}


def resolve_hf_hub(repo: str, revision: str | None, *, cache_dir=None, local_files_only=None) -> tuple[ModelInfo, Path]:
    """Download (or find cached) config and weights of ``repo`` at ``revision`` and verify the weights
    against the sha256 in the config. Without a revision, the branch ``main`` is used and a warning names
    the commit it resolved to, so the load can be pinned."""
    from zoo import weights as W

    what = f"hf-hub:{repo}"
    cfg_path = W.hub_download(repo, HUB_CONFIG, revision or "main", cache_dir=cache_dir,
                              local_files_only=local_files_only, what=what)
    info, spec = read_config(cfg_path, repo)
    commit = cfg_path.parent.name  # huggingface_hub's cache layout: snapshots/<commit>/<file>
    weights_path = W.hub_download(repo, spec["file"], commit if _COMMIT.match(commit) else (revision or "main"),
                                  cache_dir=cache_dir, local_files_only=local_files_only, what=what)
    if revision is None:
        warnings.warn(f"hf-hub:{repo} has no revision: loaded branch main at commit {commit}; pin it with "
                      f"'hf-hub:{repo}@{commit}' for a reproducible load", stacklevel=3)
    if spec["sha256"] is not None:
        advice = (f"delete it from the Hub cache (`hf cache delete`) and load hf-hub:{repo} again; if it fails "
                  "again, the repository's weights do not match its config.json")
        W.verify_file(weights_path, spec["sha256"], spec["size"], what=what, advice=advice)
    else:
        warnings.warn(f"hf-hub:{repo}: {HUB_CONFIG} records no weights_sha256 (published before zoo recorded "
                      "it); the download could not be verified", stacklevel=3)
    return info, weights_path
