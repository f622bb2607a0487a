"""torchvision ``deeplabv3_resnet50`` / ``deeplabv3_resnet101`` checkpoints -> zoo ``deeplabv3``.

zoo's DeepLabV3 keeps torchvision's module layout, so the keys map 1:1 (``backbone.*``,
``classifier.0.convs.{0..4}.*``, ``classifier.0.project.*``, ``classifier.1..4.*``,
``aux_classifier.0..4.*``). The converter accepts a bare state dict or a training checkpoint of
torchvision's reference scripts (``{"model": state_dict, ...}``), strips a DistributedDataParallel
``module.`` prefix, optionally drops the auxiliary head, and rejects keys that do not belong to the
layout with a :class:`~zoo.errors.StateDictMismatchError` naming them.
"""
from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from zoo.converters import checkpoint_tensors
from zoo.errors import StateDictMismatchError

__all__ = ["convert"]

_PREFIXES = ("backbone.", "classifier.", "aux_classifier.")


def convert(state_dict: Mapping[str, Tensor], *, aux: bool = True) -> dict[str, Tensor]:
    """Map a torchvision DeepLabV3-ResNet state dict to zoo's ``deeplabv3`` (``aux=False`` drops the
    ``aux_classifier.*`` tensors, for a model built with ``aux=False``)."""
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in checkpoint_tensors(state_dict).items():
        if not key.startswith(_PREFIXES) or key.startswith("backbone.fc.") or key.startswith("backbone.avgpool"):
            unknown.append(key)
            continue
        if key.startswith("aux_classifier.") and not aux:
            continue
        out[key] = value
    if unknown:
        raise StateDictMismatchError(
            f"not a torchvision deeplabv3 state dict: {len(unknown)} keys outside backbone/classifier/"
            f"aux_classifier, e.g. {unknown[:5]}"
        )
    if "classifier.0.project.0.weight" not in out or "backbone.conv1.weight" not in out:
        raise StateDictMismatchError(
            "not a torchvision deeplabv3 state dict: 'backbone.conv1.weight' or "
            "'classifier.0.project.0.weight' is missing"
        )
    if aux and not any(k.startswith("aux_classifier.") for k in out):
        raise StateDictMismatchError(
            "the checkpoint has no aux_classifier.* tensors: build the model with aux=False and call "
            "convert(state_dict, aux=False)"
        )
    return out
