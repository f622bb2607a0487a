"""lartpang/HDFNet checkpoints (``HDFNet_VGG16``, ``HDFNet_VGG19``, ``HDFNet_Res50``) -> zoo's ``hdfnet``.

The authors' state dicts (https://github.com/lartpang/HDFNet, ``network/HDFNet.py``) hold the encoders
as five ``nn.Sequential`` slices each:

- VGG: ``encoder1/2/4/8/16.<j>`` = torchvision ``vgg16_bn.features[0:6] / [6:13] / [13:23] / [23:33] /
  [33:43]`` (VGG19-BN: ``[0:6] / [6:13] / [13:26] / [26:39] / [39:52]``), so ``encoderN.<j>`` ->
  ``rgb_encoder.features.<start_N + j>``; ``depth_encoder*`` the same (its first conv takes 1 channel).
- ResNet-50: ``encoder2.0`` / ``encoder2.1`` = conv1 / bn1, ``encoder4.1.*`` = layer1 (``encoder4.0``
  is the max-pool), ``encoder8/16/32.*`` = layer2/3/4.
- DepthDC's kernel generator is spelled ``gernerate_kernel`` there, ``generate_kernel`` here.

Everything else (``trans*``, ``depth_trans*``, ``upconv*``, ``selfdc_*``, ``classifier``) keeps its name.
The variant is recognised from the keys (``encoder32.*`` -> ResNet-50; ``encoder4.10.*`` -> VGG19). A
``module.`` prefix (DataParallel) is removed.
"""
from __future__ import annotations

import re
from typing import Mapping

import torch

from zoo.converters import checkpoint_tensors, remap_keys

_VGG_STARTS = {
    "vgg16": {"1": 0, "2": 6, "4": 13, "8": 23, "16": 33},
    "vgg19": {"1": 0, "2": 6, "4": 13, "8": 26, "16": 39},
}
_RES_LAYERS = {"8": "layer2", "16": "layer3", "32": "layer4"}
_ENCODER = re.compile(r"^(depth_)?encoder(\d+)\.(\d+)(\..+)$")
_OTHER = re.compile(r"^(trans|depth_trans|upconv|selfdc_)\d+\.|^classifier\.")


def detect_variant(keys) -> str:
    """'vgg16', 'vgg19' or 'resnet50' from the keys of an HDFNet state dict."""
    keys = set(keys)
    if any(k.startswith("encoder32.") for k in keys):
        return "resnet50"
    if any(k.startswith("encoder4.10.") for k in keys):
        return "vgg19"
    return "vgg16"


def _key_fn(variant: str):
    def convert_key(key: str) -> str | None:
        key = key.replace(".gernerate_kernel.", ".generate_kernel.")
        m = _ENCODER.match(key)
        if m is None:
            return key if _OTHER.match(key) else None
        depth, level, idx, rest = m.groups()
        enc = "depth_encoder" if depth else "rgb_encoder"
        if variant == "resnet50":
            if level == "2":
                stem = {"0": "conv1", "1": "bn1"}.get(idx)
                return f"{enc}.{stem}{rest}" if stem else None
            if level == "4":
                return f"{enc}.layer1{rest}" if idx == "1" else None
            return f"{enc}.{_RES_LAYERS[level]}.{idx}{rest}" if level in _RES_LAYERS else None
        starts = _VGG_STARTS[variant]
        return f"{enc}.features.{starts[level] + int(idx)}{rest}" if level in starts else None

    return convert_key


def convert(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Authors' HDFNet state dict -> zoo ``hdfnet`` state dict (backbone recognised from the keys)."""
    state_dict = checkpoint_tensors(state_dict)
    variant = detect_variant(state_dict)
    first = "encoder2.0.weight" if variant == "resnet50" else "encoder1.0.weight"
    return remap_keys(state_dict, _key_fn(variant), layout=f"HDFNet ({variant})",
                      required={("rgb_encoder.conv1.weight" if variant == "resnet50" else "rgb_encoder.features.0.weight"): first,
                                "classifier.weight": "classifier.weight"})
