"""HDFNet (zoo.models.hdfnet): shapes, two inputs, meta build, parameter counts, DDPM wiring, export."""
from __future__ import annotations

import pytest
import torch
from support.export_check import exported_and_eager

from zoo.errors import InputError
from zoo.models.hdfnet import DenseTransLayer, HDFNet, VGGEncoder, hdfnet
from zoo.ops.depth_dc import DDPM


def _inputs(size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, size, size, generator=g), torch.rand(1, 1, size, size, generator=g)


@pytest.mark.parametrize("backbone", ["vgg16", "resnet50"])
def test_forward_two_inputs_logits_at_input_size(backbone):
    torch.manual_seed(0)
    model = hdfnet(backbone=backbone).eval()
    rgb, depth = _inputs()
    seen = []
    model.classifier.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        out = model(rgb, depth)
    assert out.shape == (1, 1, 64, 64)
    assert torch.isfinite(out).all()
    # logits straight from the 1x1 classifier, no sigmoid (the postprocess applies it)
    assert out is seen[0]


def test_depth_changes_the_output():
    torch.manual_seed(0)
    model = hdfnet(backbone="vgg16").eval()
    rgb, depth = _inputs()
    with torch.no_grad():
        assert not torch.allclose(model(rgb, depth), model(rgb, torch.rand_like(depth)))


@pytest.mark.parametrize("backbone,expected", [("vgg16", 44148129), ("vgg19", 54772641), ("resnet50", 153192001)])
def test_meta_build_and_parameter_counts(backbone, expected):
    # counts equal those of the authors' layout (tests/converters/test_hdfnet_converter.py rebuilds it)
    with torch.device("meta"):
        model = hdfnet(backbone=backbone)
    assert all(p.is_meta for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == expected


def test_structure():
    with torch.device("meta"):
        vgg, res = hdfnet(backbone="vgg19"), hdfnet(backbone="resnet50")
    assert isinstance(vgg.rgb_encoder, VGGEncoder) and vgg.depth_encoder.features[0].in_channels == 1
    assert res.depth_encoder.conv1.in_channels == 1 and res.rgb_encoder.conv1.in_channels == 3
    for model, levels in ((vgg, (4, 8, 16)), (res, (8, 16, 32))):
        for lv in levels:
            assert isinstance(getattr(model, f"selfdc_{lv}"), DDPM)
            assert isinstance(getattr(model, f"depth_trans{lv}"), DenseTransLayer)
            assert getattr(model, f"depth_trans{lv}").fuse_main.basicconv[0].out_channels == 64
    assert not hasattr(vgg, "selfdc_2") and not hasattr(res, "selfdc_4")
    assert vgg.classifier.in_channels == 32 and vgg.classifier.out_channels == 1


def test_vgg_stage_strides_and_torchvision_layout():
    import torchvision

    enc = VGGEncoder(16, 3)
    feats = enc(torch.zeros(1, 3, 32, 32))
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4, 2]
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512, 512]
    with torch.device("meta"):
        tv = torchvision.models.vgg16_bn().features.state_dict()
    ours = enc.features.state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in tv.items()}


def test_bad_inputs():
    model = hdfnet(backbone="vgg16")
    rgb, depth = _inputs(32)
    with pytest.raises(InputError):
        model(rgb, rgb)  # depth must have 1 channel
    with pytest.raises(InputError):
        model(rgb, depth[..., :16])
    with pytest.raises(ValueError):
        hdfnet(backbone="vgg11")


def test_export_vgg16():
    torch.manual_seed(0)
    model = HDFNet("vgg16").eval()
    rgb, depth = _inputs(32)
    torch.testing.assert_close(*exported_and_eager(model, rgb, depth))
