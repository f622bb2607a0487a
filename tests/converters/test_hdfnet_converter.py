"""zoo.converters.hdfnet: the authors' HDFNet state-dict layout -> zoo's hdfnet, loaded strictly.

The original layout is rebuilt here as lartpang/HDFNet's ``network/HDFNet.py`` assembles it: torchvision
``vgg16_bn`` / ``vgg19_bn`` ``features`` sliced into ``encoder1..16`` (``backbone/VGG.py``), torchvision
``resnet50`` children into ``encoder2..32`` (``backbone/ResNet.py``), 1-channel first convs for the
depth encoders, and the decoder modules under their original names (DepthDC's ``gernerate_kernel``).
"""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from zoo.converters import get_converter, list_converters
from zoo.converters.hdfnet import convert, detect_variant
from zoo.errors import StateDictMismatchError
from zoo.models.hdfnet import DenseTransLayer, hdfnet
from zoo.ops.depth_dc import DDPM, BasicConv2d

_VGG_SLICES = {
    "vgg16": ((0, 6), (6, 13), (13, 23), (23, 33), (33, 43)),
    "vgg19": ((0, 6), (6, 13), (13, 26), (26, 39), (39, 52)),
}


def original_layout(variant: str) -> nn.Module:
    """An nn.Module with the authors' module names and shapes (no forward)."""
    root = nn.Module()
    if variant == "resnet50":
        levels, chans, trans_out = (2, 4, 8, 16, 32), (64, 256, 512, 1024, 2048), (64,) * 5
        for prefix, in_c in (("", 3), ("depth_", 1)):
            net = torchvision.models.resnet50()
            if in_c == 1:
                net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
            setattr(root, f"{prefix}encoder2", nn.Sequential(net.conv1, net.bn1, net.relu))
            setattr(root, f"{prefix}encoder4", nn.Sequential(net.maxpool, net.layer1))
            setattr(root, f"{prefix}encoder8", net.layer2)
            setattr(root, f"{prefix}encoder16", net.layer3)
            setattr(root, f"{prefix}encoder32", net.layer4)
        ups = {32: (64, 64), 16: (64, 64), 8: (64, 64), 4: (64, 64), 2: (64, 32), 1: (32, 32)}
    else:
        levels, chans, trans_out = (1, 2, 4, 8, 16), (64, 128, 256, 512, 512), (32, 64, 64, 64, 64)
        for prefix, in_c in (("", 3), ("depth_", 1)):
            feats = getattr(torchvision.models, f"{variant}_bn")().features
            for lv, (a, b) in zip(levels, _VGG_SLICES[variant]):
                mods = list(feats[a:b])
                if lv == 1 and in_c == 1:
                    mods[0] = nn.Conv2d(1, 64, kernel_size=3, padding=1)
                setattr(root, f"{prefix}encoder{lv}", nn.Sequential(*mods))
        ups = {16: (64, 64), 8: (64, 64), 4: (64, 64), 2: (64, 32), 1: (32, 32)}
    for lv, c, o in zip(levels, chans, trans_out):
        setattr(root, f"trans{lv}", nn.Conv2d(c, o, 1))
    for lv, c in zip(levels[2:], chans[2:]):
        setattr(root, f"depth_trans{lv}", DenseTransLayer(c, 64))
        setattr(root, f"selfdc_{lv}", DDPM(64, 64, 64, 3, 4))
    for lv, (i, o) in ups.items():
        setattr(root, f"upconv{lv}", BasicConv2d(i, o, 3, 1, 1))
    root.classifier = nn.Conv2d(32, 1, 1)
    return root


def original_state(variant: str, device: str = "meta") -> dict[str, torch.Tensor]:
    with torch.device(device):
        sd = original_layout(variant).state_dict()
    return {k.replace(".generate_kernel.", ".gernerate_kernel."): v for k, v in sd.items()}


@pytest.mark.parametrize("variant", ["vgg16", "vgg19", "resnet50"])
def test_convert_loads_strictly(variant):
    state = original_state(variant)
    assert any(".gernerate_kernel." in k for k in state)
    assert detect_variant(state) == variant
    out = convert(state)
    with torch.device("meta"):
        model = hdfnet(backbone=variant)
    model.load_state_dict(out, strict=True, assign=True)  # keys AND shapes must match
    assert len(out) == len(state)


@pytest.mark.parametrize("variant", ["vgg16", "vgg19", "resnet50"])
def test_parameter_count_matches_original(variant):
    with torch.device("meta"):
        ours = sum(p.numel() for p in hdfnet(backbone=variant).parameters())
        theirs = sum(p.numel() for p in original_layout(variant).parameters())
    assert ours == theirs


def test_values_go_to_the_right_place():
    torch.manual_seed(0)
    state = {k: (torch.randn(v.shape) if v.is_floating_point() else torch.zeros(v.shape, dtype=v.dtype))
             for k, v in original_state("vgg16").items()}
    out = convert({"module." + k: v for k, v in state.items()})  # DataParallel prefix
    model = hdfnet(backbone="vgg16")
    model.load_state_dict(out, strict=True)
    sd = model.state_dict()
    assert torch.equal(sd["rgb_encoder.features.24.weight"], state["encoder8.1.weight"])  # 23 + 1
    assert torch.equal(sd["depth_encoder.features.0.weight"], state["depth_encoder1.0.weight"])
    assert sd["depth_encoder.features.0.weight"].shape == (64, 1, 3, 3)
    assert torch.equal(sd["selfdc_8.branch_3.generate_kernel.1.fuse.basicconv.0.weight"],
                       state["selfdc_8.branch_3.gernerate_kernel.1.fuse.basicconv.0.weight"])
    assert torch.equal(sd["classifier.bias"], state["classifier.bias"])


def test_resnet_stem_and_layer1_mapping():
    out = convert(original_state("resnet50"))
    assert out["depth_encoder.conv1.weight"].shape == (64, 1, 7, 7)
    assert "rgb_encoder.layer1.0.downsample.0.weight" in out
    assert "rgb_encoder.layer4.2.bn3.running_var" in out


def test_unknown_keys_are_refused():
    state = original_state("vgg16")
    state["encoder1.99.weight_extra_head"] = torch.empty(1, device="meta")
    state["aux_head.weight"] = torch.empty(1, device="meta")
    with pytest.raises(StateDictMismatchError, match="unknown keys"):
        convert(state)
    with pytest.raises(StateDictMismatchError, match="missing"):
        convert({"classifier.weight": torch.zeros(1, 32, 1, 1)})


@pytest.mark.skipif("hdfnet" not in list_converters(), reason="'hdfnet' not yet in zoo.converters._BUILTIN")
def test_registered_as_hdfnet():
    assert get_converter("hdfnet") is convert
