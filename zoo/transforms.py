"""The preset lookup: a registry entry's ``transforms`` / ``postprocess`` spec -> an nn.Module.

Registry entries name a preset and its arguments (``transforms: {preset: segmentation, args: {...}}``).
The presets are the tasks' (:mod:`zoo.tasks`, imported here eagerly, so no model has to import a task
for its presets to exist); users add their own with :func:`register_transform` /
:func:`register_postprocess`. The helpers the presets share (:func:`to_float_batch`, :class:`Normalize`,
...) are :mod:`zoo.tasks.preprocess`'s and the segmentation presets
:mod:`zoo.tasks.semantic_segmentation`'s; both are re-exported here.
"""
from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

from zoo.errors import RegistryError
from zoo.registry import Preset, thaw
from zoo.tasks import postprocess_presets, transform_presets
from zoo.tasks.preprocess import (RANGE_TOLERANCE, Normalize, check_input_args, resize_shorter_side,
                                  to_float_batch)
from zoo.tasks.semantic_segmentation import SegmentationPostprocess, SegmentationTransforms

__all__ = ["build_transforms", "build_postprocess", "register_transform", "register_postprocess",
           "RANGE_TOLERANCE", "Normalize", "check_input_args", "resize_shorter_side", "to_float_batch",
           "SegmentationTransforms", "SegmentationPostprocess"]

_TRANSFORMS: dict[str, type[nn.Module]] = transform_presets()
_POSTPROCESS: dict[str, type[nn.Module]] = postprocess_presets()


def register_transform(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: register a transforms preset called ``name`` (a registry ``transforms.preset``)."""
    def add(cls: type[nn.Module]) -> type[nn.Module]:
        _TRANSFORMS[name] = cls
        return cls
    return add


def register_postprocess(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: register a postprocess preset called ``name`` (a registry ``postprocess.preset``)."""
    def add(cls: type[nn.Module]) -> type[nn.Module]:
        _POSTPROCESS[name] = cls
        return cls
    return add


def _build(table: dict[str, type[nn.Module]], spec: Preset, field: str, owner: str,
           min_size: int | None = None) -> nn.Module:
    if spec.preset not in table:
        raise RegistryError(
            f"entry {owner!r}, field '{field}.preset': unknown preset {spec.preset!r}; known: {', '.join(sorted(table))}"
        )
    args = thaw(spec.args)
    if min_size is not None and "min_size" not in args and "min_size" in inspect.signature(table[spec.preset]).parameters:
        args["min_size"] = min_size
    try:
        return table[spec.preset](**args)
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"entry {owner!r}, field '{field}.args': {exc}") from None


def build_transforms(spec: Preset, owner: str = "?", min_size: int | None = None) -> nn.Module:
    """The transforms preset ``spec`` of the entry called ``owner`` (for messages); ``min_size`` (the
    entry's ``min_input_size``) goes to presets that take it unless ``spec`` sets it."""
    return _build(_TRANSFORMS, spec, "transforms", owner, min_size)


def build_postprocess(spec: Preset, owner: str = "?") -> nn.Module:
    """The postprocess preset ``spec`` of the entry called ``owner`` (for messages)."""
    return _build(_POSTPROCESS, spec, "postprocess", owner)
