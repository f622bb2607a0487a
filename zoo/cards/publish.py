"""Publishing weights to the Hugging Face Hub (or any Hub-compatible endpoint).

``publish()`` writes ``model.safetensors`` (metadata: zoo version, arch, args), ``config.json`` (enough to
``zoo.create("hf-hub:ORG/REPO@REV")``) and ``README.md`` (the model card with Hub front matter), checks the
weights load strictly into the registry architecture, uploads them in one commit, optionally tags it,
downloads the file back, verifies its sha256 and returns the registry ``weights`` entry.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from zoo import __version__
from zoo import weights as W
from zoo.cards import release_card
from zoo.errors import WeightsError, ZooError
from zoo.factory import build_model, model_info, parse_name
from zoo.hubconfig import HUB_CONFIG, HUB_WEIGHTS, write_config
from zoo.io import atomic_output, write_atomic
from zoo.registry import ModelInfo, thaw


class PublishError(ZooError, RuntimeError):
    pass


RELEASE_FILES = ("model.safetensors", "reference.safetensors", "config.json", "README.md")


def publish_to_store(folder: Path, repo_id: str, store: str | Path, *, force: bool = False) -> dict[str, Any]:
    """Copy a written release into a local weights store; the revision is the sha1 of its files' hashes."""
    import hashlib
    import shutil

    digest = hashlib.sha1()
    for name in RELEASE_FILES:
        digest.update(f"{name}\0{W.sha256_file(folder / name)}\n".encode())
    revision = digest.hexdigest()
    target = Path(store) / repo_id / revision
    if target.exists() and not force:
        raise PublishError(f"{target} already exists (the same release was published); pass --force to rewrite it")
    target.mkdir(parents=True, exist_ok=True)
    for name in RELEASE_FILES:
        shutil.copyfile(folder / name, target / name)
    check = W.sha256_file(target / HUB_WEIGHTS)
    if check != W.sha256_file(folder / HUB_WEIGHTS):
        raise WeightsError(f"copy of {HUB_WEIGHTS} into {target} is corrupt; publish again")
    return {"revision": revision, "store": str(target)}


REFERENCE_FILE = "reference.safetensors"
REFERENCE_SIZE = (64, 64)


def reference_output(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The first output tensor of ``model`` in eval mode (the one reference files store)."""
    with torch.no_grad():
        out = model.eval()(*inputs)
    if isinstance(out, dict):
        out = next(iter(out.values()))
    elif isinstance(out, (tuple, list)):
        out = out[0]
    return out


def write_reference_tensors(info: ModelInfo, weights: Path, path: Path) -> None:
    """A fixed input (seed 0, ``REFERENCE_SIZE``) and the model's output on it, saved next to the weights
    so that a later op change that alters the published model's outputs is caught (tests/test_bundled_weights.py)."""
    from safetensors.torch import save_file

    from zoo.factory import create, example_inputs

    torch.manual_seed(0)
    inputs = example_inputs(info, REFERENCE_SIZE)
    model = create(info.name, checkpoint=weights, **thaw(info.args))
    with atomic_output(path) as tmp:
        save_file({"input": inputs[0].contiguous(), "output": reference_output(model, inputs).contiguous()}, str(tmp),
                  metadata={"name": info.name, "zoo_version": __version__, "torch": torch.__version__})


STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def write_release(name: str, weights: str | Path | None, out_dir: str | Path, *, allow_pickle: bool = False,
                  dtype: str | None = None, tag: str | None = None) -> dict[str, Any]:
    """Write the release files (weights, reference tensors, config, card) for ``name`` into ``out_dir``;
    returns file, sha256 and size of the weights.

    The weights must load strictly into the registry architecture (keys and shapes), else nothing is written.
    ``dtype`` ("float16", "bfloat16", "float32") stores the floating-point tensors in that type (half the
    size in 16 bits; ``zoo.create`` loads them back in the model's dtype), except tensors that type cannot
    hold (:func:`cast_for_storage`; listed under ``kept_original_dtype``). The reference tensors are
    computed from the stored weights, so they check exactly what users get. The card's weights row of
    ``tag`` describes this file (:func:`zoo.cards.release_card`).

    ``name`` may be ``NAME.TAG`` of a registry tag (e.g. an official upstream file converted by zoo):
    without ``weights`` its verified local file is published, built with the tag's args and transforms,
    so a maintainer can mirror converted upstream weights to a Hub org and add the tag's ``hub`` half.
    """
    if dtype is not None and dtype not in STORAGE_DTYPES:
        raise ValueError(f"storage dtype must be one of {sorted(STORAGE_DTYPES)}, got {dtype!r}")
    from safetensors.torch import save_file

    base, registry_tag = parse_name(name)
    info = model_info(base)
    if weights is None:
        if registry_tag is None:
            raise PublishError(f"give --weights FILE, or NAME.TAG to publish the local file of a registry tag "
                               f"(tags of {base}: {', '.join(sorted(info.weights)) or 'none'})")
        weights = W.resolve(info, registry_tag)
    if registry_tag is not None:
        info.weights_for(registry_tag)
        tag = tag or registry_tag
        info = info.for_tag(registry_tag)
    state = W.strip_prefixes(W.read_state_dict(weights, allow_pickle=allow_pickle))
    with torch.device("meta"):
        model = build_model(info)
    tensors, _ = W.match_state_dict(model, state, strict=True, what=f"weights {weights} for {info.name}")
    kept: list[str] = []
    if dtype is not None:
        tensors, kept = cast_for_storage(tensors, STORAGE_DTYPES[dtype])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt", "zoo_version": __version__, "name": info.name, "arch": info.arch,
                "args": json.dumps(thaw(info.args), sort_keys=True)}
    with atomic_output(out / HUB_WEIGHTS) as tmp:
        save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    write_reference_tensors(info, out / HUB_WEIGHTS, out / REFERENCE_FILE)
    path = out / HUB_WEIGHTS
    file = {"file": HUB_WEIGHTS, "sha256": W.sha256_file(path), "size": path.stat().st_size}
    write_config(out / HUB_CONFIG, info, weights_sha256=file["sha256"], weights_size=file["size"])
    write_atomic(out / "README.md", release_card(info, tag, sha256=file["sha256"], size=file["size"]))
    if kept:
        file["kept_original_dtype"] = kept
    return file


def cast_for_storage(tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The floating-point tensors of ``tensors`` in ``dtype``, and the names of those kept in their own dtype
    because ``dtype`` cannot hold their values: a tensor whose finite values would overflow to +-inf (e.g. a
    BatchNorm ``running_var`` above float16's 65504 after a stem that sees 0..255 inputs) is stored as it is,
    so that no release silently carries infinities. Non-floating tensors are left alone."""
    out, kept = {}, []
    for key, value in tensors.items():
        if value.is_floating_point():
            cast = value.to(dtype)
            if bool((torch.isfinite(value) & ~torch.isfinite(cast)).any()):
                kept.append(key)
                cast = value
            value = cast
        out[key] = value
    return out, kept


def publish(
    name: str,
    weights: str | Path | None,
    repo_id: str,
    *,
    tag: str | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    allow_pickle: bool = False,
    out_dir: str | Path | None = None,
    store: str | Path | None = None,
    dtype: str | None = None,
) -> dict[str, Any]:
    """Publish ``weights`` for registry model ``name`` to ``repo_id``; returns the registry weights entry.

    ``dry_run`` only writes the files (to ``out_dir`` or a temporary folder). An existing ``tag`` is
    never moved unless ``force``. With ``store`` (a local weights mirror such as the package's bundled
    ``zoo/weights_store``) the release goes to ``store/ORG/REPO/REVISION/`` instead of a Hub, where
    REVISION is a content hash of the release files; zoo resolves it like a Hub download (sha256-verified).
    """
    from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download

    with tempfile.TemporaryDirectory(prefix="zoo-publish-") as tmp:
        folder = Path(out_dir) if out_dir else Path(tmp) / "release"
        entry: dict[str, Any] = {"repo": repo_id, "revision": None, **write_release(name, weights, folder, allow_pickle=allow_pickle, dtype=dtype, tag=tag)}
        tag = tag or parse_name(name)[1]
        if tag:
            entry["tag"] = tag
        if store is not None:
            entry.update(publish_to_store(folder, repo_id, store, force=force))
            entry["hub"] = {k: entry[k] for k in ("repo", "revision", "file", "sha256", "size")}
            return entry
        if dry_run:
            entry["dry_run"] = True
            entry["files"] = sorted(p.name for p in folder.iterdir())
            return entry
        api = HfApi(endpoint=endpoint, token=token)
        api.create_repo(repo_id, exist_ok=True)
        old_tag = None
        if tag:
            refs = api.list_repo_refs(repo_id)
            old_tag = next((t for t in refs.tags if t.name == tag), None)
            if old_tag is not None and not force:
                raise PublishError(f"tag {tag!r} already exists in {repo_id} at {old_tag.target_commit}; "
                                   "pass --force to move it (published pins keep working), or pick a new tag")
        ops = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(folder / f)) for f in RELEASE_FILES]
        commit = api.create_commit(repo_id, operations=ops, commit_message=f"Publish {name} weights (dynzoo {__version__})")
        revision = commit.oid
        if tag:
            if old_tag is not None:
                api.delete_tag(repo_id, tag=tag)
            api.create_tag(repo_id, tag=tag, revision=revision)
        check = hf_hub_download(repo_id, HUB_WEIGHTS, revision=revision, cache_dir=Path(tmp) / "verify-cache",
                                endpoint=endpoint, token=token)
        got = W.sha256_file(check)
        if got != entry["sha256"]:
            raise WeightsError(f"published {repo_id}@{revision}/{HUB_WEIGHTS} downloads with sha256 {got}, "
                               f"uploaded {entry['sha256']}: the upload is corrupt; publish again")
        entry["revision"] = revision
        entry["hub"] = {k: entry[k] for k in ("repo", "revision", "file", "sha256", "size")}  # the registry's tag.hub
        return entry


# Names of the connection-failure exceptions of huggingface_hub's HTTP clients (httpx or its successor httpx2,
# httpcore, requests), matched by name so that no client library need be imported to recognise them.
_CONNECTION_ERRORS = {"ConnectError", "ConnectTimeout", "NetworkError", "TimeoutException", "TransportError",
                      "ProxyError", "ConnectionError"}


def _unreachable(exc: BaseException) -> BaseException | None:
    """The connection failure behind ``exc`` (itself or a cause), or None when the endpoint answered."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        names = {c.__name__ for c in type(exc).__mro__}
        if isinstance(exc, (ConnectionError, TimeoutError)) or names & _CONNECTION_ERRORS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def hub_error(exc: BaseException, endpoint: str | None) -> ZooError | None:
    """The one-line error ``zoo publish`` gives when an upload failed because the Hub endpoint (``endpoint``,
    default HF_ENDPOINT) could not be reached or refused it, naming the options that fix it; None when ``exc``
    is some other failure."""
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError

    endpoint = endpoint or constants.ENDPOINT
    cause = _unreachable(exc)
    if cause is not None:
        if constants.HF_HUB_OFFLINE:
            return ZooError(f"HF_HUB_OFFLINE is set, so the Hub endpoint {endpoint} cannot be reached; unset it to "
                            "publish, or use --dry-run / --store")
        reason = " ".join(str(cause).split()) or type(cause).__name__
        return ZooError(f"the Hub endpoint {endpoint} could not be reached ({reason}); check --endpoint (or "
                        "HF_ENDPOINT) and the network, or use --dry-run / --store to publish without a Hub")
    if isinstance(exc, HfHubHTTPError):
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return ZooError(f"the Hub endpoint {endpoint} refused the upload ({reason}); check --repo-id and --token "
                        "(or HF_TOKEN)")
    return None
