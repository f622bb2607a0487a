import pytest
import torch
from support.export_check import exported_and_eager
from torch import nn

from zoo.archs import get_arch
from zoo.errors import InputError
from zoo.models.cacnet import CaCHead, CaCNet, cacnet
from zoo.ops.cac import ContextAdaptiveConv


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_meta_structure_and_param_counts():
    with torch.device("meta"):
        m = cacnet(num_classes=21)
        out = m.eval()(torch.empty(1, 3, 512, 512))
    assert out.shape == (1, 21, 64, 64)
    # CaC-Net has no official code and reports no parameter count; the counts are zoo's, by part:
    # torchvision ResNet-101 without fc 42,500,160; head: reduce 3x3 2048->512 + BN 9,438,208,
    # CaC(512): key 512*512+512, query 512*27+27 (3 kernel sets of 3x3), kernel BN 2*1536, global 1x1
    # 512*512+512 -> 542,235; bottleneck 3x3 512->512 + BN 2,360,320; conv_seg 512*21+21 = 10,773;
    # aux FCN head 1024->256 (3x3 + BN) + 256*21+21 = 2,365,205.
    assert _n_params(m.backbone) == 42_500_160
    assert _n_params(m.decode_head.cac) == 512 * 512 + 512 + 512 * 27 + 27 + 2 * 1536 + 512 * 512 + 512 == 542_235
    assert _n_params(m.decode_head) == 9_438_208 + 542_235 + 2_360_320 + 10_773
    assert _n_params(m) == 42_500_160 + 12_351_536 + 2_365_205 == 57_216_901
    b = m.backbone
    assert [blk.conv2.dilation[0] for blk in b.layer4] == [2, 4, 4] and b.layer3[1].conv2.dilation == (2, 2)
    cac = m.decode_head.cac
    assert isinstance(cac, ContextAdaptiveConv) and cac.dilations == (1, 3, 5) and cac.heads == 1
    assert cac.global_conv is not None and cac.fusion == "sigmoid_sum"


def test_forward_train_and_eval_batch_one():
    torch.manual_seed(0)
    m = cacnet(backbone="resnet50", num_classes=5)
    x = torch.randn(1, 3, 64, 64)
    out = m.train()(x)  # batch 1 trains: the kernel BN normalises over the s*s kernel entries
    assert set(out) == {"out", "aux"} and out["out"].shape == out["aux"].shape == (1, 5, 8, 8)
    out["out"].mean().backward()
    assert m.decode_head.cac.query_conv.weight.grad is not None
    with torch.no_grad():
        ev = m.eval()(x)
    assert ev.shape == (1, 5, 8, 8) and torch.isfinite(ev).all()


def test_head_composes_reduce_cac_bottleneck():
    torch.manual_seed(0)
    head = CaCHead(16, 8, 3, dropout=0.0, heads=2, separate_kernels=False).eval()
    x = torch.randn(2, 16, 7, 9)
    with torch.no_grad():
        ref = head.conv_seg(head.bottleneck(head.cac(head.reduce(x))))
        assert torch.allclose(head(x), ref)
    assert head.cac.heads == 2 and head.cac.num_kernel_sets == 1


def test_options_reach_the_module_and_errors():
    with torch.device("meta"):
        m = cacnet(heads=4, dilations=(1, 2), fusion="sum_sigmoid", global_pool=False, aux=False, output_stride=16)
        assert m.decode_head.cac.heads == 4 and m.decode_head.cac.dilations == (1, 2)
        assert m.decode_head.cac.global_conv is None and m.auxiliary_head is None
        assert m.eval()(torch.empty(1, 3, 64, 64)).shape == (1, 21, 4, 4)
        with pytest.raises(InputError):
            m(torch.empty(1, 3, 64))
    with pytest.raises(ValueError, match="backbone"):
        cacnet(backbone="resnet18")
    with pytest.raises(ValueError, match="output_stride"):
        cacnet(output_stride=32)
    assert get_arch("cacnet") is cacnet and isinstance(m, CaCNet)


def test_export_cacnet():
    torch.manual_seed(0)
    m = cacnet(backbone="resnet50", num_classes=4).eval()
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(*exported_and_eager(m, x), atol=1e-4)


def test_plain_twin_is_the_same_network_without_the_cac_module():
    """``context=False`` (the -small entry's plain twin): identity in place of the CaC module, every other
    tensor the same name and shape; ``width`` scales the backbone."""
    with torch.device("meta"):
        small = cacnet(backbone="resnet50", width=0.25, channels=128, num_classes=7)
        plain = cacnet(backbone="resnet50", width=0.25, channels=128, num_classes=7, context=False)
    assert isinstance(small.decode_head.cac, ContextAdaptiveConv) and isinstance(plain.decode_head.cac, nn.Identity)
    ours = {k: v.shape for k, v in small.state_dict().items()}
    theirs = {k: v.shape for k, v in plain.state_dict().items()}
    assert {k: s for k, s in ours.items() if not k.startswith("decode_head.cac.")} == theirs
    assert small.backbone.layer4[-1].conv3.out_channels == 512  # 2048 * 0.25
    torch.manual_seed(0)
    net = cacnet(backbone="resnet50", width=0.25, channels=128, num_classes=7, context=False).eval()
    assert net(torch.randn(2, 3, 40, 56)).shape == (2, 7, 5, 7)
