"""zoo.layers.heads: mmseg's decode-head classifier, FCNHead and EncoderDecoder; torchvision's FCN head."""
import pytest
import torch
from torch import nn

from zoo.errors import InputError
from zoo.layers import BaseDecodeHead, EncoderDecoder, FCNHead, fcn_head, resnet


def test_base_decode_head_classifier():
    head = BaseDecodeHead(16, 5, dropout=0.1)
    assert isinstance(head.dropout, nn.Dropout2d) and head.conv_seg.out_channels == 5
    assert torch.equal(head.conv_seg.bias, torch.zeros(5)) and float(head.conv_seg.weight.detach().std()) < 0.05
    assert BaseDecodeHead(16, 5, dropout=0.0).dropout is None
    assert head.eval().cls_seg(torch.randn(2, 16, 3, 4)).shape == (2, 5, 3, 4)


def test_fcn_head_keys_shape_and_channel_check():
    head = FCNHead(32, 8, num_classes=4).eval()
    assert "convs.0.conv.weight" in head.state_dict() and "conv_seg.weight" in head.state_dict()
    assert head(torch.randn(1, 32, 5, 5)).shape == (1, 4, 5, 5)
    with pytest.raises(InputError):
        head(torch.randn(1, 16, 5, 5))


def test_torchvision_fcn_head_layout():
    head = fcn_head(64, 3, nn.BatchNorm2d).eval()
    assert [type(m).__name__ for m in head] == ["Conv2d", "BatchNorm2d", "ReLU", "Dropout", "Conv2d"]
    assert head[0].out_channels == 16 and head(torch.randn(1, 64, 4, 4)).shape == (1, 3, 4, 4)


def test_encoder_decoder_aux_only_in_training():
    backbone = resnet(depth=18, width=0.25, features_only=True, out_indices=(3, 4))
    c3, c4 = backbone.feature_channels[3], backbone.feature_channels[4]
    model = EncoderDecoder(backbone, FCNHead(c4, 8, 3), FCNHead(c3, 8, 3))
    x = torch.randn(1, 3, 64, 64)
    out = model.train()(x)
    assert set(out) == {"out", "aux"} and out["out"].shape == (1, 3, 2, 2) and out["aux"].shape == (1, 3, 4, 4)
    assert model.eval()(x).shape == (1, 3, 2, 2)
    assert set(EncoderDecoder(backbone, FCNHead(c4, 8, 3)).train()(x)) == {"out"}
