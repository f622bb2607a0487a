import pytest
import torch
import torchvision
from support.export_check import exported_and_eager
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from zoo.archs import get_arch
from zoo.models.deeplab import DeepLabV2, DeepLabV3, deeplabv2, deeplabv3
from zoo.ops.aspp import ASPP


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# construction on the meta device, parameter counts -------------------------------------------------------
@pytest.mark.parametrize("depth,expected", [(50, 42_004_074), (101, 60_996_202)])
def test_deeplabv3_meta_matches_torchvision_layout(depth, expected):
    with torch.device("meta"):
        ours = deeplabv3(backbone=f"resnet{depth}", num_classes=21, aux=True)
        tv = getattr(torchvision.models.segmentation, f"deeplabv3_resnet{depth}")(
            weights=None, weights_backbone=None, aux_loss=True, num_classes=21
        )
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in tv.state_dict().items()}
    assert _n_params(ours) == _n_params(tv) == expected


def test_deeplabv2_meta_structure_and_params():
    with torch.device("meta"):
        m = deeplabv2()
        out = m.eval().forward_single(torch.empty(1, 3, 513, 513))
    assert out.shape == (1, 21, 65, 65)  # output stride 8 as the Caffe model (513 -> 65)
    b = m.backbone
    assert b.maxpool.ceil_mode and [len(getattr(b, f"layer{i}")) for i in range(1, 5)] == [3, 4, 23, 3]
    assert b.layer2[0].conv1.stride == (2, 2) and b.layer2[0].conv2.stride == (1, 1)
    assert [blk.conv2.dilation[0] for blk in b.layer3] == [2] * 23
    assert [blk.conv2.dilation[0] for blk in b.layer4] == [4] * 3
    assert all(blk.conv2.stride == (1, 1) and blk.conv1.stride == (1, 1) for blk in b.layer4)
    assert m.aspp.mode == "v2" and m.aspp.rates == (6, 12, 18, 24) and m.scales == (1.0, 0.75, 0.5)
    assert not hasattr(b, "fc")
    # ResNet-101 without fc (42,500,160) + four 3x3 2048->21 convs with bias (1,548,372)
    assert _n_params(m) == 44_048_532
    assert _n_params(m.backbone) == 42_500_160


@pytest.mark.parametrize("output_stride,rates", [(8, (12, 24, 36)), (16, (6, 12, 18))])
def test_deeplabv3_rates(output_stride, rates):
    with torch.device("meta"):
        m = deeplabv3(output_stride=output_stride, aux=False)
        assert m.classifier[0].rates == rates and m.aux_classifier is None
        assert m.eval()(torch.empty(1, 3, 65, 65)).shape == (1, 21, -(-65 // output_stride), -(-65 // output_stride))
        assert deeplabv3(atrous_rates=(3, 5, 7)).classifier[0].rates == (3, 5, 7)
        grid = deeplabv3(output_stride=16, multi_grid=(1, 2, 4))
    assert [blk.conv2.dilation[0] for blk in grid.backbone.layer4] == [2, 4, 8]


# forward passes ----------------------------------------------------------------------------------------
def test_deeplabv3_eval_and_train_outputs():
    torch.manual_seed(0)
    m = deeplabv3(backbone="resnet50", num_classes=5, aux=True)
    x = torch.randn(2, 3, 33, 41)
    with torch.no_grad():
        y = m.eval()(x)
        assert isinstance(y, torch.Tensor) and y.shape == (2, 5, 5, 6) and torch.isfinite(y).all()
        out = m.train()(x)
    assert set(out) == {"out", "aux"}
    assert out["out"].shape == out["aux"].shape == (2, 5, 5, 6)


def test_deeplabv2_eval_and_train_outputs():
    torch.manual_seed(0)
    m = deeplabv2(backbone="resnet50", num_classes=4)  # same layout as resnet101 with fewer res4 blocks
    x = torch.randn(1, 3, 41, 33)
    with torch.no_grad():
        y = m.eval()(x)
        outs = m.train()(x)
    assert isinstance(y, torch.Tensor) and y.shape == (1, 4, 6, 5) and torch.isfinite(y).all()
    # per-scale logits (1.0, 0.75, 0.5) at their own resolution, then the max-fused logits
    assert [tuple(o.shape) for o in outs] == [(1, 4, 6, 5), (1, 4, 4, 4), (1, 4, 3, 3), (1, 4, 6, 5)]


def test_deeplabv2_fusion_is_max_over_scales():
    torch.manual_seed(0)
    m = deeplabv2(backbone="resnet50", num_classes=3).eval()
    x = torch.randn(1, 3, 49, 49)
    with torch.no_grad():
        fused = m(x)
        singles = [m.forward_single(torch.nn.functional.interpolate(x, scale_factor=s, mode="bilinear"))
                   if s != 1.0 else m.forward_single(x) for s in (1.0, 0.75, 0.5)]
    resized = [torch.nn.functional.interpolate(y, size=fused.shape[-2:], mode="bilinear") for y in singles]
    torch.testing.assert_close(fused, torch.stack(resized).amax(0))


class _Extra(nn.Module):
    def __init__(self, out_channels: int = 8) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.proj = nn.Conv2d(2048, out_channels, 1)
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x)
        return self.proj(x)


def test_deeplabv2_res5_extra_taps_res5b():
    torch.manual_seed(0)
    extra = _Extra()
    m = deeplabv2(backbone="resnet50", num_classes=3, res5_extra=extra, scales=(1.0,)).eval()
    assert m.aspp.in_channels == 2048 + 8 and "res5_extra.proj.weight" in m.state_dict()
    res5b = []
    m.backbone.layer4[1].register_forward_hook(lambda mod, inp, out: res5b.append(out))
    with torch.no_grad():
        y = m(torch.randn(1, 3, 33, 33))
    assert y.shape == (1, 3, 5, 5)
    assert len(extra.seen) == 1 and torch.equal(extra.seen[0], res5b[0])
    # the extra branch runs at every scale with the same weights
    with torch.device("meta"):
        m2 = deeplabv2(backbone="resnet50", res5_extra=_Extra(4), res5_tap=2)
        assert m2.eval()(torch.empty(1, 3, 33, 33)).shape == (1, 21, 5, 5)
    assert len(m2.res5_extra.seen) == 3 and m2.res5_tap == 2


def test_deeplabv2_frozen_bn():
    with torch.device("meta"):
        m = deeplabv2(norm="frozen_bn")
    assert isinstance(m.backbone.layer4[2].bn3, FrozenBatchNorm2d)
    assert _n_params(m) < 44_048_532  # the frozen BN affine tensors are buffers


# errors and registry -----------------------------------------------------------------------------------
def test_errors():
    from zoo.errors import InputError

    with torch.device("meta"):
        with pytest.raises(ValueError, match="backbone"):
            deeplabv3(backbone="vgg16")
        with pytest.raises(ValueError, match="output_stride"):
            deeplabv3(output_stride=32)
        with pytest.raises(ValueError, match="res5_extra_channels"):
            deeplabv2(res5_extra=nn.Identity())
        with pytest.raises(ValueError, match="without"):
            deeplabv2(res5_extra_channels=8)
        with pytest.raises(ValueError, match="res5_tap"):
            deeplabv2(res5_extra=_Extra(), res5_tap=3)
        with pytest.raises(ValueError, match="1.0"):
            deeplabv2(scales=(0.5,))
        with pytest.raises(InputError):
            deeplabv3()(torch.empty(1, 4, 33, 33))


def test_registered():
    assert get_arch("deeplabv3") is deeplabv3 and get_arch("deeplabv2") is deeplabv2
    with torch.device("meta"):
        assert isinstance(get_arch("deeplabv3")(backbone="resnet101"), DeepLabV3)
        assert isinstance(get_arch("deeplabv2")(), DeepLabV2)
        assert isinstance(deeplabv2().aspp, ASPP)


# torch.export ------------------------------------------------------------------------------------------
def test_export_deeplabv3():
    torch.manual_seed(0)
    m = deeplabv3(backbone="resnet50").eval()
    x = torch.randn(1, 3, 33, 33)
    torch.testing.assert_close(*exported_and_eager(m, x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_export_deeplabv2():
    torch.manual_seed(0)
    m = deeplabv2().eval()
    x = torch.randn(1, 3, 41, 41)
    torch.testing.assert_close(*exported_and_eager(m, x), rtol=1e-4, atol=1e-4)


# --- LS-DFN variant (deeplabv2-lsdfn) -------------------------------------------------------------
def test_lsdfn_variant_reads_res5b_and_widens_the_aspp():
    import zoo
    from zoo.layers import LSDFNBranch
    from zoo.ops import LSDFN

    model = zoo.create("deeplabv2-lsdfn", scales=(1.0,))
    assert isinstance(model.res5_extra, LSDFNBranch) and isinstance(model.res5_extra.lsdfn, LSDFN)
    lsdfn = model.res5_extra.lsdfn
    assert (lsdfn.in_channels, lsdfn.out_channels, lsdfn.samples_per_side, lsdfn.sample_stride) == (256, 24, 5, 3)
    assert model.aspp.convs[0].weight.shape[1] == 2048 + 24
    seen = []
    model.res5_extra.register_forward_hook(lambda m, args, out: seen.append((args[0].shape, out.shape)))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 65, 65))
    assert out.shape == (1, 21, 9, 9) and seen == [((1, 2048, 9, 9), (1, 24, 9, 9))]


def test_lsdfn_and_res5_extra_are_exclusive():
    import zoo

    with pytest.raises(ValueError, match="either lsdfn"):
        zoo.create("deeplabv2-lsdfn", res5_extra=torch.nn.Identity())
