"""zoo.layers.resnet: the shared ResNet (tests/models/test_resnet.py covers the network itself)."""
import pytest

import zoo.models.resnet
from zoo.layers import RESNET_DEPTHS, ResNet, resnet, resnet_depth


def test_depth_table():
    assert {d: k for d, (k, _) in RESNET_DEPTHS.items()} == {18: "basic", 34: "basic", 50: "bottleneck",
                                                            101: "bottleneck", 152: "bottleneck"}
    assert RESNET_DEPTHS[101][1] == (3, 4, 23, 3)


def test_backbone_names():
    assert resnet_depth("resnet50") == 50 and resnet_depth("resnet18") == 18
    assert resnet_depth("resnet101", kinds=("bottleneck",)) == 101
    with pytest.raises(ValueError, match=r"\['resnet50', 'resnet101', 'resnet152'\], got 'resnet18'"):
        resnet_depth("resnet18", kinds=("bottleneck",))
    for bad in ("resnet", "resnet7", "vgg16", "resnet50x"):
        with pytest.raises(ValueError, match="backbone must be one of"):
            resnet_depth(bad)


def test_the_registered_family_is_this_network():
    assert zoo.models.resnet.resnet is resnet and zoo.models.resnet.ResNet is ResNet
    assert isinstance(resnet(depth=18, width=0.25), ResNet)
