"""Where weights files live and whether they are intact: zoo's cache directory, the mirror directories
and the bundled store, sha256 checks that leave a stamp, and huggingface_hub's offline switch.

The file layer under :mod:`zoo.weights` (which resolves a registry tag to a file) and :mod:`zoo.upstream`
(which converts official files): it knows files and hashes, not models or converters.

A full hash is computed once per file; afterwards a stamp (path, size, mtime) in ``$ZOO_CACHE`` (default
``~/.cache/zoo``) lets later checks skip re-hashing; ``force=True`` (``zoo verify``) always re-hashes. A
mismatch never deletes anything: the error names the file and how to get a good copy.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from zoo.errors import ChecksumError
from zoo.registry import HubFile

MIRROR_ENV = "ZOO_WEIGHTS_MIRROR"
CACHE_ENV = "ZOO_CACHE"
BUNDLED_STORE = Path(__file__).parent / "weights_store"


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cache_root() -> Path:
    """zoo's own cache: verification stamps, original upstream files and their conversions."""
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "zoo"
    )
    return Path(root)


def _stamp_path(sha256: str) -> Path:
    return cache_root() / "verified" / f"{sha256}.json"


def _file_identity(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def verify_file(path: str | Path, sha256: str, size: int | None = None, *, what: str = "weights", force: bool = False,
                advice: str = "remove the file and download it again (`zoo download NAME --force`)") -> None:
    """Raise :class:`ChecksumError` unless ``path`` has the expected sha256 (and size).

    A successful full check leaves a stamp so the next call costs only a ``stat``; ``force`` re-hashes.
    ``advice`` is how to get a good copy (it depends on where the file came from).
    """
    path = Path(path)
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise ChecksumError(
            f"{what}: {path} has {actual_size} bytes, the registry expects {size} (truncated or wrong file). "
            f"Nothing was deleted; {advice}."
        )
    stamp = _stamp_path(sha256)
    identity = _file_identity(path)
    if not force and stamp.is_file():
        try:
            if json.loads(stamp.read_text()) == identity:
                return
        except (OSError, ValueError):
            pass
    actual = sha256_file(path)
    if actual != sha256:
        raise ChecksumError(
            f"{what}: sha256 of {path} is {actual}, the registry expects {sha256}. The file is corrupt or "
            f"not the published one. Nothing was deleted; {advice}."
        )
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        tmp = stamp.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(identity))
        os.replace(tmp, stamp)
    except OSError:
        pass  # a read-only cache only costs a re-hash next time


def mirror_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get(MIRROR_ENV, "").split(os.pathsep) if p]
    return dirs + [BUNDLED_STORE]


def find_in_mirrors(hub: HubFile) -> Path | None:
    for root in mirror_dirs():
        candidate = root / hub.repo / hub.revision / hub.file
        if candidate.is_file():
            return candidate
    return None


def offline_mode() -> bool:
    """True when huggingface_hub is in offline mode (``HF_HUB_OFFLINE``)."""
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover
        return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}
