"""Resolving a registry weights tag to a verified local file.

Resolution order for a registry weights tag (:func:`resolve`; one owner per step):

1. local mirrors: every directory in ``ZOO_WEIGHTS_MIRROR`` (``os.pathsep``-separated), then the
   store bundled with the package (``zoo/weights_store``). Layout: ``<mirror>/<org>/<repo>/<revision>/<file>``
   for the tag's ``hub`` file;
2. the Hugging Face Hub copy (``hub``) through ``huggingface_hub.hf_hub_download`` at the pinned
   revision, honouring ``cache_dir``, ``local_files_only`` and ``HF_HUB_OFFLINE``; the endpoint is
   ``HF_ENDPOINT``. When the tag also has an ``upstream`` half, a cached conversion is used before the
   network, and a Hub copy that cannot be reached falls through to step 3;
3. :mod:`zoo.upstream`: the official upstream file, downloaded (or found in ``DIR/upstream/``),
   hash-checked, converted and cached; for ``manual`` tags an error that says how to import the file;
4. for ``warm_start`` tags (:func:`warm_start`) the host's weights, resolved by these same steps and
   expanded into the entry, cached as a conversion.

Every file is checked against the registry's sha256 before it is used (:mod:`zoo.files`: hashes, stamps,
mirrors, zoo's cache). Reading and loading state dicts is :mod:`zoo.state_dicts` (safetensors only by
default; a pickle checkpoint needs ``allow_pickle=True`` and is read with ``torch.load(weights_only=True)``);
its names are re-exported here. Layering: files, state_dicts <- upstream <- weights <- factory.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from zoo import upstream
from zoo.errors import OfflineError, WeightsError
from zoo.files import (BUNDLED_STORE, CACHE_ENV, MIRROR_ENV, cache_root, find_in_mirrors, mirror_dirs,  # noqa: F401
                       offline_mode, sha256_file, verify_file)
from zoo.registry import HubFile, ModelInfo, build_model, parse_name, get as registry_get
from zoo.state_dicts import (PICKLE_SUFFIXES, expand_state_dict, load_into_meta_model, match_state_dict,  # noqa: F401
                             mmap_safetensors, read_pickle_checkpoint, read_state_dict, strip_prefixes,
                             unwrap_checkpoint)

# ------------------------------------------------------------------------------------ resolution
def hub_download(
    repo: str,
    file: str,
    revision: str,
    *,
    cache_dir: str | Path | None = None,
    local_files_only: bool | None = None,
    what: str,
    force_download: bool = False,
) -> Path:
    """``hf_hub_download`` with zoo's error messages. The endpoint is ``HF_ENDPOINT`` read at call time.
    ``force_download`` fetches the file again and replaces the cached blob."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = offline_mode() if local_files_only is None else local_files_only
    where = f"{repo}@{revision[:12]}/{file}"
    try:
        return Path(hf_hub_download(
            repo, file, revision=revision, cache_dir=cache_dir, local_files_only=offline,
            endpoint=os.environ.get("HF_ENDPOINT") or None, library_name="dynzoo", force_download=force_download,
        ))
    except LocalEntryNotFoundError:
        how = "offline mode is on (HF_HUB_OFFLINE=1 or local_files_only=True)" if offline else "the Hub could not be reached"
        raise OfflineError(
            f"{what}: {where} is not in the cache and {how}. Download it first on a connected machine "
            f"(`zoo download`), copy the cache (HF_HUB_CACHE), or put the file in a mirror directory "
            f"({MIRROR_ENV}=DIR with DIR/{repo}/{revision}/{file})."
        ) from None
    except RevisionNotFoundError:
        raise WeightsError(f"{what}: revision {revision} does not exist in Hub repo {repo!r}; check the registry entry") from None
    except RepositoryNotFoundError:
        raise WeightsError(f"{what}: Hub repo {repo!r} does not exist or is private (log in with `hf auth login`)") from None
    except EntryNotFoundError:
        raise WeightsError(f"{what}: file {file!r} is not in {repo}@{revision}; check the registry entry") from None
    except HfHubHTTPError as exc:
        raise WeightsError(f"{what}: download of {where} failed: {exc}") from None
    except OSError as exc:  # e.g. huggingface_hub's size consistency check on a truncated transfer
        raise WeightsError(f"{what}: download of {where} did not complete ({exc}); try again") from None


def cached_hub_file(hub: HubFile, *, cache_dir: str | Path | None = None) -> Path | None:
    """The cached Hub file of ``hub`` if present (never touches the network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(hub.repo, hub.file, cache_dir=cache_dir, revision=hub.revision)
    return Path(found) if isinstance(found, str) else None


def local_copy(info: ModelInfo, tag: str, *, cache_dir: str | Path | None = None) -> Path | None:
    """Where the file of ``info.tag`` already is on this machine (mirror, bundled store, Hub cache or
    zoo's conversion cache), unverified; None when it would have to be fetched."""
    w = info.weights[tag]
    if w.hub is not None:
        found = find_in_mirrors(w.hub) or cached_hub_file(w.hub, cache_dir=cache_dir)
        if found is not None:
            return found
    candidate = upstream.converted_dir(info, tag) / upstream.CONVERTED
    return candidate if w.kind != "hub" and candidate.is_file() else None


def hub_advice(info: ModelInfo, tag: str, path: Path) -> str:
    """How to replace a bad copy of a ``hub`` file, by where ``path`` is."""
    if path.is_relative_to(BUNDLED_STORE):
        return "the package itself is damaged: reinstall dynzoo (pip install --force-reinstall dynzoo)"
    if any(path.is_relative_to(d) for d in mirror_dirs()):
        return f"replace it in the mirror directory with a good copy ({MIRROR_ENV})"
    return f"run `zoo download {info.name}.{tag} --force` to fetch it again"


def resolve(
    info: ModelInfo,
    tag: str | None = None,
    *,
    cache_dir: str | Path | None = None,
    local_files_only: bool | None = None,
    force_download: bool = False,
) -> Path:
    """Local path of the verified weights file of ``info`` for ``tag`` (default tag when None).

    ``force_download`` ignores cached copies in zoo's and huggingface_hub's caches (not mirrors or the
    bundled store) and fetches and converts again, replacing them."""
    weights = info.weights_for(tag)
    tag, hub = weights.tag, weights.hub
    what = f"weights {info.name}.{tag}"
    if hub is not None:
        path = find_in_mirrors(hub)
        fallback = weights.upstream is not None or weights.warm_start is not None or weights.manual is not None
        if path is None and not fallback:
            path = hub_download(hub.repo, hub.file, hub.revision, cache_dir=cache_dir,
                                local_files_only=local_files_only, what=what, force_download=force_download)
        elif path is None:  # a Hub copy of a converted tag: Hub cache, a cached conversion, the Hub, then upstream
            path = None if force_download else cached_hub_file(hub, cache_dir=cache_dir)
            if path is None and (force_download or upstream.cached_converted(info, tag) is None):
                try:
                    path = hub_download(hub.repo, hub.file, hub.revision, cache_dir=cache_dir,
                                        local_files_only=local_files_only, what=what, force_download=force_download)
                except WeightsError:
                    path = None
        if path is not None:
            verify_file(path, hub.sha256, hub.size, what=what, advice=hub_advice(info, tag, path))
            return path
    if weights.warm_start:
        return warm_start(info, tag, local_files_only=local_files_only, force=force_download)
    return upstream.resolve(info, tag, local_files_only=local_files_only, force=force_download)


def warm_start(info: ModelInfo, tag: str, *, local_files_only: bool | None = None, force: bool = False) -> Path:
    """The file of a ``warm_start`` tag: the host entry's weights (resolved like any tag) expanded into
    ``info``'s network (:func:`expand_state_dict`), its added branch initialised under
    ``upstream.WARM_START_SEED``; cached as a conversion with its provenance (``force`` builds it again)."""
    cached = None if force else upstream.cached_converted(info, tag)
    if cached is not None:
        return cached
    w = info.weights[tag]
    host_name, host_tag = parse_name(w.warm_start)
    host_state = read_state_dict(resolve(registry_get(host_name), host_tag, local_files_only=local_files_only))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(upstream.WARM_START_SEED)
        model = build_model(info, **info.args_for(tag))
    report = expand_state_dict(model, host_state, source=w.warm_start)
    if report["kept_from_source"]:
        raise WeightsError(f"warm start {info.name}.{tag}: host tensors {report['kept_from_source'][:5]} fit no "
                           f"tensor of {info.name}; the host is not this entry's network without its added branch")
    return upstream.write_converted(info, tag, model.state_dict(),
                                    {**upstream.provenance(w), "expanded": sorted(report["expanded"]),
                                     "initialised": sorted(report["kept"])})


def verify_local(info: ModelInfo, tag: str, path: Path) -> None:
    """Re-hash the local copy ``path`` of ``info.tag`` (a Hub file, or a conversion against its sidecar)."""
    w = info.weights[tag]
    if w.hub is not None and not path.is_relative_to(upstream.converted_dir(info, tag)):
        verify_file(path, w.hub.sha256, w.hub.size, what=f"{info.name}.{tag}", force=True,
                    advice=hub_advice(info, tag, path))
    else:
        upstream.verify_converted(info, tag, force=True)
