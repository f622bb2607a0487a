"""``create()``: build a registry model, load its weights and attach transforms and post-processing."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.errors import UsageError
from zoo.hubconfig import HUB_WEIGHTS, parse_hf_hub, resolve_hf_hub
from zoo.registry import ModelInfo, build_model, default_registry, parse_name, thaw  # noqa: F401 (public here)
from zoo.tasks import get_task
from zoo.transforms import build_postprocess, build_transforms
from zoo import weights as W



def parse_overrides(items: Sequence[str] | None, option: str = "--arch-override") -> dict[str, Any]:
    """``["width=0.25", "batch_norm=true"]`` -> ``{"width": 0.25, "batch_norm": True}``: KEY=VALUE options
    (``option`` names them in errors) with YAML values, e.g. constructor arguments for :func:`create`."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or ():
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"{option} takes KEY=VALUE, got {item!r}; write key=value (e.g. width=0.25)")
        out[key.strip()] = yaml.safe_load(value)
    return out


def model_info(name: str) -> ModelInfo:
    """The registry record of ``name`` (``name.tag`` accepted)."""
    return default_registry().get(parse_name(name)[0])


def get_transforms(name: str) -> nn.Module:
    """The inference transforms of ``name`` without building the model."""
    info = model_info(name)
    return build_transforms(info.transforms, info.name, info.min_input_size)


_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                   "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_")


@contextlib.contextmanager
def skip_init() -> Iterator[None]:
    """``torch.nn.init`` functions do nothing inside (they return their tensor): for building a model on the
    meta device whose weights are loaded next (as accelerate's ``init_empty_weights`` and transformers'
    ``no_init_weights``), where running the initialisers through meta decompositions only costs time."""
    saved = {name: getattr(nn.init, name) for name in _INIT_FUNCTIONS}
    try:
        for name in _INIT_FUNCTIONS:
            setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)


def example_inputs(info: ModelInfo, size: tuple[int, int] | None = None, batch: int = 1,
                   device: str | torch.device | None = None, *, random: bool = True) -> tuple[Any, ...]:
    """Network inputs (after transforms) for ``info``, as positional arguments of ``model(*inputs)``.

    Built from ``info.input_size`` (optionally at another spatial ``size``) by the entry's task
    (:attr:`zoo.tasks.Task.example_inputs`): one ``(batch, C, H, W)`` tensor for image tasks (C = 6 for a
    FlowNet frame pair, ``(B, T, C, H, W)`` for video prediction's ``[T, C, H, W]``); ``(rgb, depth)`` for
    RGB-D saliency's ``[4, H, W]``; one list of ``batch`` ``(C, H, W)`` images for detection
    (torchvision's detection API).

    ``random=False`` gives uninitialised tensors (use with ``device="meta"``). Used for FLOP counts,
    reference tensors, smoke tests and export checks.
    """
    *lead, height, width = info.input_size
    if size is not None:
        height, width = size
    make = (lambda *shape: torch.randn(shape, device=device)) if random else (lambda *shape: torch.empty(shape, device=device))
    return get_task(info.task).example_inputs(make, batch, lead, height, width)


def create(
    name: str,
    pretrained: bool | str = False,
    *,
    checkpoint: str | Path | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool | None = None,
    num_classes: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    strict: bool = True,
    allow_pickle: bool = False,
    **arch_overrides: Any,
) -> nn.Module:
    """Build model ``name`` in eval mode, with ``.transforms``, ``.postprocess`` and ``.info`` attached.

    Args:
        name: a registry name (``"deeplabv3-r50"``), ``"name.tag"`` for a weights tag, or
            ``"hf-hub:ORG/REPO[@REV]"`` for a repository published with ``zoo publish``.
        pretrained: True for the default weights, or a tag name.
        checkpoint: a local weights file (safetensors; pickle with ``allow_pickle``) or a directory
            holding ``model.safetensors``; ``module.`` / ``_orig_mod.`` prefixes are stripped.
        revision: for ``hf-hub:`` names, the commit, branch or tag to load.
        cache_dir, local_files_only: passed to huggingface_hub (``HF_HUB_OFFLINE`` is honoured).
        num_classes: a new number of classes; the entry's ``classifier`` modules are re-initialised.
        device, dtype: where and in which floating dtype the model lives.
        strict: refuse missing, unexpected or mis-shaped keys (the default).
        arch_overrides: extra constructor arguments.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    weights_path: Path | None = None
    user_file = False
    hub = parse_hf_hub(name, revision)
    if hub:
        info, weights_path = resolve_hf_hub(*hub, cache_dir=cache_dir, local_files_only=local_files_only)
        tag = None
    else:
        base, tag = parse_name(name)
        info = default_registry().get(base)
        if isinstance(pretrained, str):
            if tag is not None and tag != pretrained:
                raise ValueError(f"{name!r} names tag {tag!r} but pretrained={pretrained!r}; give one")
            tag = pretrained
        if tag is not None:
            info.weights_for(tag)  # unknown tag -> clear error before any work
            pretrained = True
    if checkpoint is not None:
        if pretrained and not hub:
            raise ValueError(f"{name!r}: give either pretrained= (registry weights) or checkpoint= (your file), not both")
        weights_path = Path(checkpoint)
        if weights_path.is_dir():
            weights_path = weights_path / HUB_WEIGHTS
        user_file = True
    elif pretrained and not hub:
        tag = info.weights_for(tag).tag
        weights_path = W.resolve(info, tag, cache_dir=cache_dir, local_files_only=local_files_only)
    if weights_path is None or user_file:
        tag = None

    overrides = {**(thaw(info.weights[tag].args) if tag is not None else {}), **arch_overrides}
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    classes_changed = num_classes is not None and num_classes != info.args_for(tag).get("num_classes")

    if weights_path is None:
        model = build_model(info, **overrides).to(device=device, dtype=dtype)
    else:
        model = _build_from_file(info, overrides, weights_path, user_file=user_file,
                                 reinit=info.classifier if classes_changed else (), strict=strict,
                                 allow_pickle=allow_pickle, device=device, dtype=dtype)
    model.eval()
    _attach(model, info, tag, classes_changed)
    return model


def _build_from_file(info: ModelInfo, overrides: dict[str, Any], weights_path: Path, *, user_file: bool,
                     reinit: tuple[str, ...], strict: bool, allow_pickle: bool, device: torch.device,
                     dtype: torch.dtype | None) -> nn.Module:
    """Model ``info`` (constructor arguments ``overrides``) built on the meta device and loaded from
    ``weights_path``; ``module.`` / ``_orig_mod.`` prefixes are stripped from a ``user_file``."""
    # Read (and check) the file before building, so a bad file costs nothing and loads nothing.
    state = W.read_state_dict(weights_path, allow_pickle=allow_pickle)
    if user_file:
        state = W.strip_prefixes(state)
    with torch.device("meta"), skip_init():
        model = build_model(info, **overrides)
    tensors, _ = W.match_state_dict(
        model, state, reinit=reinit, strict=strict,
        what=f"weights {weights_path}",
    )
    W.load_into_meta_model(model, tensors, device=device, dtype=dtype)
    return model


def _attach(model: nn.Module, info: ModelInfo, tag: str | None, classes_changed: bool = False) -> None:
    """``transforms`` and ``postprocess`` for the weights loaded (a tag's own preprocessing when it has
    one), ``info``, ``weights_tag`` and ``categories`` (class names in output order, or None)."""
    from zoo.registry import categories

    w = info.weights[tag] if tag is not None else None
    names = categories(w.categories) if w is not None and w.categories and not classes_changed else None
    # object.__setattr__ keeps transforms out of the model's state dict and module tree.
    object.__setattr__(model, "transforms", build_transforms(info.transforms_for(tag), info.name, info.min_input_size))
    object.__setattr__(model, "postprocess", build_postprocess(info.postprocess, info.name))
    object.__setattr__(model, "info", info)
    object.__setattr__(model, "weights_tag", tag)
    object.__setattr__(model, "categories", list(names) if names is not None else None)
