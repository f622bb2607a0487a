import pytest
import torch
import torch.nn.functional as F
from support.export_check import exported_and_eager
from torch import nn

from zoo.archs import get_arch
from zoo.errors import InputError
from zoo.models.dmnet import DMHead, DMNet, FCNHead, ResNetV1c, dmnet
from zoo.ops.dmnet import DynamicConvModule


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# Parameter counts of mmseg's dmnet_r{50,101}-d8 (ADE20K, 150 classes), from its architecture:
# - ResNetV1c-50 without fc: torchvision ResNet-50 without fc (23,508,032) - 7x7 stem conv+BN (9,536)
#   + deep stem 3x3 convs 3->32->32->64 with BN (864 + 64 + 9,216 + 64 + 18,432 + 128 = 28,768) = 23,527,264;
#   ResNetV1c-101: 42,500,160 - 9,536 + 28,768 = 42,519,392;
# - DMHead: 4 DCMs x (filter_gen 2048*512+512, input_redu 2048*512 + BN 1,024, norm 1,024) = 8,398,848,
#   bottleneck 3x3 (2048 + 4*512) -> 512 + BN = 18,875,392, conv_seg 512*150+150 = 76,950 -> 27,351,190;
# - FCNHead: 3x3 1024 -> 256 + BN = 2,359,808, conv_seg 256*150+150 = 38,550 -> 2,398,358.
MMSEG = {50: 23_527_264 + 27_351_190 + 2_398_358, 101: 42_519_392 + 27_351_190 + 2_398_358}


@pytest.mark.parametrize("depth", [50, 101])
def test_meta_param_counts_match_mmseg(depth):
    with torch.device("meta"):
        m = dmnet(depth=depth, num_classes=150)
        m.eval()
        out = m(torch.empty(1, 3, 512, 512))
    assert out.shape == (1, 150, 64, 64)
    assert _n_params(m) == MMSEG[depth]
    assert _n_params(m.decode_head) == 27_351_190 and _n_params(m.auxiliary_head) == 2_398_358


def test_structure():
    with torch.device("meta"):
        m = dmnet(depth=50)
    b = m.backbone
    assert isinstance(b, ResNetV1c) and not hasattr(b, "conv1") and not hasattr(b, "bn1")
    convs = [mod for mod in b.deep_stem if isinstance(mod, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (3, 32, (3, 3), (2, 2)), (32, 32, (3, 3), (1, 1)), (32, 64, (3, 3), (1, 1))]
    assert [type(mod) for mod in b.deep_stem][1::3] == [nn.BatchNorm2d] * 3
    # D8 with contract_dilation: first block of layer3 at 1, of layer4 at 2; stride on the 3x3 conv
    assert [blk.conv2.dilation[0] for blk in b.layer3] == [1] + [2] * 5
    assert [blk.conv2.dilation[0] for blk in b.layer4] == [2, 4, 4]
    assert b.layer2[0].conv2.stride == (2, 2) and b.layer2[0].conv1.stride == (1, 1)
    h = m.decode_head
    assert [d.filter_size for d in h.dcm_modules] == [1, 3, 5, 7]
    assert all(isinstance(d, DynamicConvModule) and d.fusion_conv is None for d in h.dcm_modules)
    assert h.bottleneck.conv.in_channels == 2048 + 4 * 512 and h.bottleneck.conv.kernel_size == (3, 3)
    assert isinstance(h.dropout, nn.Dropout2d) and h.dropout.p == 0.1
    assert m.auxiliary_head.convs[0].conv.in_channels == 1024 and m.auxiliary_head.convs[0].conv.out_channels == 256


def test_forward_train_and_eval():
    torch.manual_seed(0)
    m = dmnet(depth=50, num_classes=5)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = m.eval()(x)
        train = m.train()(x)
    assert out.shape == (1, 5, 8, 8) and torch.isfinite(out).all()
    assert set(train) == {"out", "aux"} and train["aux"].shape == (1, 5, 8, 8)
    with torch.device("meta"):
        no_aux = dmnet(depth=50, aux=False)
        assert no_aux.auxiliary_head is None and set(no_aux.train()(torch.empty(1, 3, 64, 64))) == {"out"}


def test_deep_stem_is_the_stem():
    torch.manual_seed(0)
    m = dmnet(depth=50, num_classes=3).eval()
    b = m.backbone
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref = x
        for mod in b.deep_stem:
            ref = mod(ref)
        assert torch.equal(b.stem(x), ref)
        layer3, layer4 = b(x)
        manual = b.layer3(b.layer2(b.layer1(F.max_pool2d(ref, 3, 2, 1))))
    assert torch.allclose(layer3, manual) and layer4.shape == (1, 2048, 4, 4)


def test_dmhead_concatenates_input_and_dcms():
    torch.manual_seed(0)
    head = DMHead(8, 4, 3, filter_sizes=(1, 3), dropout=0.0).eval()
    x = torch.randn(2, 8, 5, 6)
    with torch.no_grad():
        cat = torch.cat([x, head.dcm_modules[0](x), head.dcm_modules[1](x)], 1)
        assert torch.allclose(head(x), head.conv_seg(head.bottleneck(cat)))
    fcn = FCNHead(8, 4, 3, dropout=0.0).eval()
    with torch.no_grad():
        assert torch.allclose(fcn(x), fcn.conv_seg(fcn.convs(x)))


def test_errors_and_registration():
    with pytest.raises(ValueError, match="depth"):
        dmnet(depth=18)
    with torch.device("meta"):
        m = dmnet()
        with pytest.raises(InputError):
            m(torch.empty(1, 1, 64, 64))
        with pytest.raises(InputError):
            m.decode_head(torch.empty(1, 1024, 8, 8))
    assert get_arch("dmnet") is dmnet and isinstance(m, DMNet)


def test_export_dmnet():
    torch.manual_seed(0)
    m = dmnet(depth=50, num_classes=4).eval()
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(*exported_and_eager(m, x), atol=1e-4)
