"""zoo.layers.resnet: the shared ResNet (tests/models/test_resnet.py covers the network itself)."""
import pytest

import torch
from torch import nn

import zoo.models.resnet
from zoo.layers import RESNET_DEPTHS, ResNet, dcn_conv2_factory, resnet, resnet_depth
from zoo.ops.deform_conv import DeformConv2d, ModulatedDeformConv2d


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


def test_dcn_conv2_factory_swaps_conv2_of_the_chosen_stages():
    with torch.device("meta"):
        body = resnet(depth=50, output_stride=16, dilate_first_block=True, features_only=True,
                      conv2_factory=dcn_conv2_factory("dcn", stages=(4,), deform_groups=4))
        v2 = resnet(depth=50, features_only=True, conv2_factory=dcn_conv2_factory("mdcn", stages=(2, 3)))
    for block in body.layer4:  # Deformable-ConvNets' res5: 3x3, dilation 2, padding 2, 4 offset fields
        conv = block.conv2
        assert isinstance(conv, DeformConv2d) and conv.bias is None
        assert (conv.dilation, conv.padding, conv.stride, conv.deform_groups) == ((2, 2), (2, 2), (1, 1), 4)
        assert tuple(conv.conv_offset.weight.shape) == (72, 512, 3, 3) and conv.conv_offset.dilation == (2, 2)
    assert not any(isinstance(m, DeformConv2d) for layer in (body.layer1, body.layer2, body.layer3)
                   for m in layer.modules())
    assert "layer4.0.conv2.conv_offset.bias" in body.state_dict() and "layer4.0.conv2.weight" in body.state_dict()
    assert isinstance(v2.layer2[0].conv2, ModulatedDeformConv2d) and v2.layer2[0].conv2.stride == (2, 2)  # the block's
    assert isinstance(v2.layer4[0].conv2, nn.Conv2d)
    with pytest.raises(ValueError, match="dcn must be"):
        dcn_conv2_factory("dconv")
    with pytest.raises(ValueError, match="stages 1..4"):
        dcn_conv2_factory("dcn", stages=(5,))
