"""Weights from outside the zoo's own releases: official upstream files, manual downloads and warm starts.

An ``upstream`` tag names the official file by the URL its authors publish, with their hash (the full
sha256 or the prefix the file name carries, as torchvision and OpenMMLab check it) and zoo's converter.
The first ``create(..., pretrained=...)`` on a connected machine

1. finds the original file in ``DIR/upstream/<file name>`` of a ``ZOO_WEIGHTS_MIRROR`` directory or in
   zoo's cache, else downloads it with ``torch.hub.download_url_to_file`` (progress bar; the file is
   written to a temporary name and moved into place only when complete) under a file lock, so two
   processes never download it twice;
2. checks its sha256 against the upstream hash (a mismatch deletes the download: nothing is cached);
3. reads it (pickles with ``torch.load(weights_only=True)``, MXNet ``.params`` and Caffe ``.caffemodel``
   with zoo's own readers), converts it, checks the result strictly against the model, and writes
   ``converted/<entry>/<tag>/model.safetensors`` with a ``source.json`` sidecar (URL, upstream hash,
   converter, zoo version, sha256 of the converted file).

Later loads verify the converted file against its sidecar and never touch the network. ``manual`` tags
(Google Drive, Baidu Pan, OneDrive, logins) go through the same steps from a file the user downloaded:
``zoo import NAME.TAG FILE``. ``warm_start`` tags (the host entry's weights expanded into the entry,
:func:`zoo.weights.warm_start`) are cached here the same way (:func:`write_converted`). This module
imports the file layer (:mod:`zoo.files`, :mod:`zoo.state_dicts`) and the converters, never
:mod:`zoo.weights` or the factory.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import torch

from zoo.errors import ChecksumError, OfflineError, WeightsError
from zoo.files import cache_root, mirror_dirs, offline_mode, sha256_file, verify_file
from zoo.io import atomic_output
from zoo.registry import ModelInfo, UpstreamFile, Weights, build_model
from zoo.state_dicts import match_state_dict, mmap_safetensors, read_pickle_checkpoint

SIDECAR = "source.json"
CONVERTED = "model.safetensors"
WARM_START_SEED = 0


def converted_dir(info: ModelInfo, tag: str) -> Path:
    return cache_root() / "converted" / info.name / tag


def originals_dir() -> Path:
    return cache_root() / "upstream"


def hash_matches(actual: str, expected: str) -> bool:
    """``expected`` is a full sha256 or the prefix an upstream file name carries."""
    return actual.startswith(expected)


def provenance(w: Weights) -> dict[str, str]:
    """What a converted file was made from (recorded in its sidecar, compared on every load)."""
    from zoo._version import __version__

    if w.warm_start:
        return {"warm_start": w.warm_start, "seed": str(WARM_START_SEED)}
    spec = w.upstream or w.manual
    assert spec is not None
    out = {"converter": spec.converter, "file_name": getattr(spec, "file_name"), "upstream_sha256": spec.sha256 or ""}
    if w.upstream is not None:
        out["url"] = w.upstream.url
    out["zoo_version"] = __version__
    return out


def _same_source(recorded: Mapping[str, str], w: Weights) -> bool:
    wanted = provenance(w)
    return all(recorded.get(k) == v for k, v in wanted.items() if k != "zoo_version")


def cached_converted(info: ModelInfo, tag: str, *, force: bool = False) -> Path | None:
    """The verified converted file of ``info.tag``, or None (never touches the network); ``force`` re-hashes."""
    folder = converted_dir(info, tag)
    path, sidecar = folder / CONVERTED, folder / SIDECAR
    if not (path.is_file() and sidecar.is_file()):
        return None
    try:
        record = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    if not _same_source(record, info.weights[tag]):
        return None  # the registry now names another file or converter: convert again
    verify_file(path, record["sha256"], record.get("size"), what=f"converted weights {info.name}.{tag}", force=force,
                advice=f"run `zoo download {info.name}.{tag} --force` to convert it again")
    return path


def verify_converted(info: ModelInfo, tag: str, *, force: bool = True) -> None:
    if cached_converted(info, tag, force=force) is None:
        raise ChecksumError(f"converted weights {info.name}.{tag}: the cached conversion in {converted_dir(info, tag)} "
                            f"has no sidecar or was made from another file; run `zoo download {info.name}.{tag} --force`")


# ------------------------------------------------------------------------------------ originals
def find_original(file_name: str) -> Path | None:
    """An original upstream file in ``DIR/upstream/`` of a mirror directory, or in zoo's cache."""
    for root in [*mirror_dirs(), None]:
        candidate = (root / "upstream" if root is not None else originals_dir()) / file_name
        if candidate.is_file():
            return candidate
    return None


def check_original(path: Path, expected: str | None, *, what: str, origin: str) -> str:
    """The sha256 of ``path``; :class:`ChecksumError` naming ``origin`` and both hashes on a mismatch."""
    actual = sha256_file(path)
    if expected is not None and not hash_matches(actual, expected):
        raise ChecksumError(f"{what}: {origin} has sha256 {actual}, the upstream publishes {expected}"
                            f"{'...' if len(expected) < 64 else ''}; the file is corrupt or not the official one")
    return actual


def _download(up: UpstreamFile, partial: Path, *, what: str, progress: bool) -> str:
    """Download ``up.url`` to ``partial`` and check it; returns its sha256. Errors leave nothing behind."""
    from torch.hub import download_url_to_file

    try:
        download_url_to_file(up.url, str(partial), hash_prefix=None, progress=progress)
    except Exception as exc:  # noqa: BLE001 - urllib raises URLError, HTTPError, IncompleteRead, OSError
        raise WeightsError(
            f"{what}: downloading {up.url} failed ({getattr(exc, 'reason', None) or exc}); nothing was cached. "
            f"Try again, or on a machine without access put the file at DIR/upstream/{up.file_name} with "
            f"ZOO_WEIGHTS_MIRROR=DIR") from None
    try:
        return check_original(partial, up.sha256, what=what, origin=up.url)
    except ChecksumError as exc:
        raise ChecksumError(f"{exc}; the download was deleted: nothing was cached") from None


def read_original(path: Path, file_name: str) -> dict[str, torch.Tensor]:
    """The tensors of an official checkpoint file (its hash was checked before), read by the kind its
    upstream ``file_name`` says: MXNet ``.params``, Caffe ``.caffemodel``, safetensors, or a torch pickle
    (``torch.load(weights_only=True)``: no code in the file runs)."""
    suffix = Path(file_name).suffix
    if suffix == ".params":
        from zoo.converters.mxnet_params import load_params

        return load_params(path)
    if suffix == ".caffemodel":
        from zoo.converters.caffemodel import load_caffemodel

        return load_caffemodel(path)
    if suffix == ".safetensors":
        try:
            return mmap_safetensors(path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise WeightsError(f"{path} is not a readable safetensors file ({exc})") from None
    return read_pickle_checkpoint(path)


# ------------------------------------------------------------------------------------ conversion
def write_converted(info: ModelInfo, tag: str, tensors: Mapping[str, torch.Tensor], record: dict) -> Path:
    """Check ``tensors`` strictly against the entry's model, then write them and the sidecar atomically."""
    from safetensors.torch import save_file

    with torch.device("meta"):
        model = build_model(info, **info.args_for(tag))
    match_state_dict(model, tensors, strict=True, what=f"converted weights {info.name}.{tag}")
    folder = converted_dir(info, tag)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{CONVERTED}.{os.getpid()}.tmp"
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(tmp),
              metadata={"zoo_entry": info.name, "zoo_tag": tag})
    record = {**record, "sha256": sha256_file(tmp), "size": tmp.stat().st_size}
    os.replace(tmp, folder / CONVERTED)
    side = folder / f".{SIDECAR}.{os.getpid()}.tmp"
    side.write_text(json.dumps(record, indent=2))
    os.replace(side, folder / SIDECAR)
    return folder / CONVERTED


def convert_original(info: ModelInfo, tag: str, original: Path, original_sha256: str) -> Path:
    """Convert the checked original file of ``info.tag`` and cache the result."""
    from zoo.converters import get_converter

    w = info.weights[tag]
    spec = w.upstream or w.manual
    assert spec is not None
    state = get_converter(spec.converter)(read_original(original, spec.file_name))
    return write_converted(info, tag, state, {**provenance(w), "original": str(original),
                                               "original_sha256": original_sha256})


def import_file(info: ModelInfo, tag: str, path: str | Path) -> Path:
    """``zoo import NAME.TAG FILE``: check a hand-downloaded official file, convert and cache it."""
    w = info.weights_for(tag)
    spec = w.upstream or w.manual
    if spec is None:
        raise WeightsError(f"{info.name}.{tag} is not an upstream or manual tag ({w.kind}); nothing to import")
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path} does not exist; give the file downloaded from "
                           f"{getattr(spec, 'page', None) or getattr(spec, 'url')}")
    what = f"weights {info.name}.{tag}"
    actual = check_original(path, spec.sha256, what=what, origin=str(path))
    return convert_original(info, tag, path, actual)


def manual_message(info: ModelInfo, w: Weights) -> str:
    m = w.manual
    assert m is not None
    hash_note = f" (sha256 {m.sha256}{'...' if len(m.sha256) < 64 else ''})" if m.sha256 else ""
    return (f"weights {info.name}.{w.tag}: the official file {m.file_name}{hash_note} is published at {m.page}, which "
            f"zoo cannot download from. Download it by hand, then run `zoo import {info.name}.{w.tag} "
            f"PATH/{m.file_name}` (or put it at DIR/upstream/{m.file_name} with ZOO_WEIGHTS_MIRROR=DIR); zoo checks it, "
            f"converts it with the {m.converter!r} converter and caches the result")


def resolve(info: ModelInfo, tag: str, *, local_files_only: bool | None = None, progress: bool = True,
            force: bool = False) -> Path:
    """The converted, verified file of an upstream or manual tag (converted on first use).
    ``force`` converts again, from a fresh download of the original when it came from zoo's cache."""
    w = info.weights[tag]
    cached = None if force else cached_converted(info, tag)
    if cached is not None:
        return cached
    spec = w.upstream or w.manual
    assert spec is not None
    what = f"weights {info.name}.{tag}"
    original = find_original(spec.file_name)
    if force and w.upstream is not None and original is not None and original.parent == originals_dir():
        original.unlink()
        original = None
    if original is not None:
        try:
            actual = check_original(original, spec.sha256, what=what, origin=str(original))
        except ChecksumError as exc:
            raise ChecksumError(f"{exc}. Nothing was deleted; remove {original} and run `zoo download "
                                f"{info.name}.{tag}` again") from None
        return convert_original(info, tag, original, actual)
    if w.manual is not None:
        raise OfflineError(manual_message(info, w))
    if offline_mode() if local_files_only is None else local_files_only:
        raise OfflineError(
            f"{what}: not converted yet and offline mode is on (HF_HUB_OFFLINE=1 or local_files_only=True). "
            f"On a connected machine run `zoo download {info.name}.{tag}` and copy zoo's cache "
            f"({converted_dir(info, tag).parent.parent.parent}), or put the official file "
            f"{spec.file_name} ({w.upstream.url}) at DIR/upstream/{spec.file_name} with ZOO_WEIGHTS_MIRROR=DIR")
    return _download_and_convert(info, tag, w.upstream, what=what, progress=progress, force=force)


def _download_and_convert(info: ModelInfo, tag: str, up: UpstreamFile, *, what: str, progress: bool,
                          force: bool = False) -> Path:
    """Under a file lock (one download however many processes ask): download to a temporary name, check,
    convert, and only then keep the original in zoo's cache. A download that fails any step (including one
    cut short that no upstream hash could catch: it does not read) is deleted."""
    from filelock import FileLock

    folder = originals_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / up.file_name
    with FileLock(str(target) + ".lock"):
        done = None if force else cached_converted(info, tag)  # another process may have finished meanwhile
        if done is not None:
            return done
        if target.is_file():
            return convert_original(info, tag, target, check_original(target, up.sha256, what=what, origin=str(target)))
        partial = folder / f".{up.file_name}.{os.getpid()}.download"
        try:
            actual = _download(up, partial, what=what, progress=progress)
            try:
                path = convert_original(info, tag, partial, actual)
            except WeightsError as exc:
                raise type(exc)(f"{exc} (downloaded from {up.url}; the download was deleted: nothing was cached)") from None
            os.replace(partial, target)
            return path
        finally:
            partial.unlink(missing_ok=True)


def convert_file(source: str, src: str | Path, dst: str | Path) -> dict[str, object]:
    """``zoo convert``: an official checkpoint file to a zoo safetensors file with converter ``source``.

    Official checkpoints are pickles: running a converter on one is the opt-in, and the file is still
    read with ``torch.load(weights_only=True)``. MXNet ``.params`` and Caffe ``.caffemodel`` files are read
    without MXNet or Caffe (:func:`read_original`).
    """
    from safetensors.torch import save_file

    from zoo.converters import get_converter

    fn = get_converter(source)
    out = fn(read_original(Path(src), Path(src).name))
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(dst) as tmp:
        save_file({k: v.contiguous() for k, v in out.items()}, str(tmp), metadata={"converted_from": source})
    return {"converter": source, "tensors": len(out), "out": str(dst), "sha256": sha256_file(dst)}
