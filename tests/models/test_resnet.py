import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from zoo.archs import get_arch
from zoo.models.resnet import BasicBlock, Bottleneck, ResNet, resnet


def _dilations(model: nn.Module, layer: str) -> list[int]:
    return [blk.conv2.dilation[0] for blk in getattr(model, layer)]


# torchvision layout -----------------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_keys_and_shapes_match_torchvision(depth):
    with torch.device("meta"):
        ours = resnet(depth=depth)
        tv = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in tv.state_dict().items()}


@pytest.mark.parametrize("output_stride,replace", [(32, [False] * 3), (16, [False, False, True]), (8, [False, True, True])])
def test_dilation_matches_torchvision(output_stride, replace):
    with torch.device("meta"):
        ours = resnet(depth=50, output_stride=output_stride)
        tv = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=replace)
    for layer in ("layer1", "layer2", "layer3", "layer4"):
        assert _dilations(ours, layer) == _dilations(tv, layer), layer
        assert [b.conv2.stride for b in getattr(ours, layer)] == [b.conv2.stride for b in getattr(tv, layer)]


def test_outputs_match_torchvision():
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None).eval()
    with torch.no_grad():
        for m in tv.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    ours = resnet(depth=18).eval()
    ours.load_state_dict(tv.state_dict(), strict=True)
    x = torch.randn(2, 3, 45, 37)
    torch.testing.assert_close(ours(x), tv(x), rtol=1e-5, atol=1e-5)


# dilation variants -----------------------------------------------------------------------------------
def test_dilate_first_block_and_multi_grid():
    with torch.device("meta"):
        caffe = resnet(depth=101, output_stride=8, dilate_first_block=True)
        tv_style = resnet(depth=101, output_stride=8)
        grid16 = resnet(depth=50, output_stride=16, multi_grid=(1, 2, 4))
        grid8 = resnet(depth=50, output_stride=8, multi_grid=(1, 2, 4))
    assert _dilations(caffe, "layer3") == [2] * 23 and _dilations(caffe, "layer4") == [4] * 3
    assert _dilations(tv_style, "layer3") == [1] + [2] * 22 and _dilations(tv_style, "layer4") == [2, 4, 4]
    assert _dilations(grid16, "layer4") == [2, 4, 8] and _dilations(grid16, "layer3") == [1] * 6
    assert _dilations(grid8, "layer4") == [4, 8, 16]
    assert all(b.conv2.padding == b.conv2.dilation for b in grid8.layer4)


def test_stride_in_1x1():
    with torch.device("meta"):
        msra = resnet(depth=50, stride_in_1x1=True)
        v15 = resnet(depth=50)
    for layer in ("layer2", "layer3", "layer4"):
        first_msra, first_v15 = getattr(msra, layer)[0], getattr(v15, layer)[0]
        assert (first_msra.conv1.stride, first_msra.conv2.stride) == ((2, 2), (1, 1))
        assert (first_v15.conv1.stride, first_v15.conv2.stride) == ((1, 1), (2, 2))
        assert first_msra.downsample[0].stride == (2, 2)
    assert msra(torch.empty(1, 3, 64, 64, device="meta")).shape == (1, 1000)


def test_pool_ceil_mode():
    with torch.device("meta"):
        plain = resnet(depth=50, features_only=True, out_indices=(1,))
        ceil = resnet(depth=50, features_only=True, out_indices=(1,), pool_ceil_mode=True)
        x = torch.empty(1, 3, 64, 64)
        assert plain(x)[0].shape[-1] == 16 and ceil(x)[0].shape[-1] == 17
        x = torch.empty(1, 3, 65, 65)  # odd sizes agree
        assert plain(x)[0].shape[-1] == ceil(x)[0].shape[-1] == 17


# features_only ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth,channels", [(18, (64, 64, 128, 256, 512)), (50, (64, 256, 512, 1024, 2048))])
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_features_only_shapes(depth, channels, output_stride):
    with torch.device("meta"):
        m = resnet(depth=depth, output_stride=output_stride, features_only=True, out_indices=(0, 1, 2, 3, 4))
        feats = m(torch.empty(2, 3, 65, 97))
    assert not hasattr(m, "fc") and m.feature_channels == channels
    strides = [2, 4, 8, min(16, output_stride), min(32, output_stride)]
    for f, c, s in zip(feats, channels, strides):
        assert f.shape == (2, c, -(-65 // s), -(-97 // s))


def test_features_only_real_values():
    torch.manual_seed(0)
    full = resnet(depth=18, output_stride=8).eval()
    feat = resnet(depth=18, output_stride=8, features_only=True, out_indices=(2, 4)).eval()
    missing = feat.load_state_dict(full.state_dict(), strict=False)
    assert set(missing.unexpected_keys) == {"fc.weight", "fc.bias"} and not missing.missing_keys
    x = torch.randn(1, 3, 33, 41)
    c2, c4 = feat(x)
    expected4 = full.layer4(full.layer3(full.layer2(full.layer1(full.maxpool(full.relu(full.bn1(full.conv1(x))))))))
    torch.testing.assert_close(c4, expected4)
    assert c2.shape == (1, 128, 5, 6)


# hooks and norms --------------------------------------------------------------------------------------
class _TaggedConv(nn.Conv2d):
    pass


def test_conv2_factory():
    calls = []

    def factory(*, stage, block, in_channels, out_channels, stride, dilation):
        calls.append((stage, block, stride, dilation))
        if stage < 4:
            return None
        return _TaggedConv(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)

    m = resnet(depth=50, output_stride=16, conv2_factory=factory)
    assert len(calls) == 16 and calls[-3:] == [(4, 0, 1, 1), (4, 1, 1, 2), (4, 2, 1, 2)]
    assert calls[3] == (2, 0, 2, 1)
    assert all(isinstance(b.conv2, _TaggedConv) for b in m.layer4)
    assert not any(isinstance(b.conv2, _TaggedConv) for b in m.layer3)
    assert "layer4.2.conv2.weight" in m.state_dict()
    assert m.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 1000)


def test_frozen_bn_and_callable_norm():
    with torch.device("meta"):
        frozen = resnet(depth=50, norm="frozen_bn")
        gn = resnet(depth=18, norm=lambda c: nn.GroupNorm(8, c))
    assert isinstance(frozen.layer4[2].bn3, FrozenBatchNorm2d)
    assert not any(k.endswith("num_batches_tracked") for k in frozen.state_dict())
    assert isinstance(gn.layer1[0].bn1, nn.GroupNorm)
    # a torchvision (BatchNorm) checkpoint loads into the frozen variant
    with torch.device("meta"):
        tv = torchvision.models.resnet50(weights=None)
    frozen.load_state_dict(tv.state_dict(), strict=True, assign=True)


def test_zero_init_residual():
    m = resnet(depth=18, zero_init_residual=True)
    assert all(torch.all(b.bn2.weight == 0) for b in m.layer1)


# errors, registry, block types -------------------------------------------------------------------------
def test_errors():
    with pytest.raises(ValueError, match="depth"):
        resnet(depth=42)
    with pytest.raises(ValueError, match="output_stride"):
        resnet(depth=50, output_stride=4)
    with pytest.raises(ValueError, match="multi_grid"):
        resnet(depth=50, multi_grid=(1, 2))
    with pytest.raises(ValueError, match="out_indices"):
        resnet(depth=50, features_only=True, out_indices=(5,))
    with pytest.raises(ValueError, match="norm"):
        resnet(depth=50, norm="syncbn")
    with pytest.raises(ValueError, match="width"):
        resnet(depth=50, width=0)
    from zoo.errors import InputError

    with pytest.raises(InputError):
        resnet(depth=18)(torch.randn(1, 1, 32, 32))


@pytest.mark.parametrize("depth", [18, 50])
def test_width_scales_every_stage(depth):
    full = resnet(depth=depth, features_only=True, out_indices=(0, 1, 2, 3, 4))
    quarter = resnet(depth=depth, width=0.25, features_only=True, out_indices=(0, 1, 2, 3, 4), output_stride=8)
    assert quarter.feature_channels == tuple(c // 4 for c in full.feature_channels)
    assert quarter.conv1.out_channels == 16 and quarter.layer4[-1].conv2.dilation == (4, 4)
    feats = quarter(torch.randn(2, 3, 33, 47))
    assert [f.shape[1] for f in feats] == list(quarter.feature_channels)
    assert resnet(depth=depth, width=0.5).fc.in_features == full.feature_channels[4] // 2


def test_registered_and_block_types():
    assert get_arch("resnet") is resnet
    with torch.device("meta"):
        assert isinstance(resnet(depth=34).layer1[0], BasicBlock)
        assert isinstance(resnet(depth=101).layer3[22], Bottleneck) and isinstance(resnet(depth=18), ResNet)
