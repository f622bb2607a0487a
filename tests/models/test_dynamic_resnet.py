"""zoo.models.dynamic_resnet: DY-ResNet-18 / DyNet-ResNet-18 shapes, layer placement, parameter counts,
temperature plumbing, export."""
import pytest
import torch
import torchvision
from support.export_check import exported_and_eager

from zoo.archs import get_arch
from zoo.errors import InputError
from zoo.models.resnet import BasicBlock
from zoo.models.dynamic_resnet import DyConvBasicBlock, DyNetBasicBlock, dy_resnet, dynet_resnet
from zoo.ops.dy_conv import DyConv2d, set_temperature, temperature_schedule
from zoo.ops.dynet import DyNetConv2d

CONVS_3X3 = ([(64, 64)] * 4 + [(64, 128)] + [(128, 128)] * 3 + [(128, 256)] + [(256, 256)] * 3
             + [(256, 512)] + [(512, 512)] * 3)  # (in, out) of ResNet-18's sixteen 3x3 convs


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("build,layer", [(dy_resnet, DyConv2d), (dynet_resnet, DyNetConv2d)])
def test_meta_build_and_placement(build, layer):
    with torch.device("meta"):
        m = build(num_classes=10)
        assert m(torch.empty(2, 3, 64, 64)).shape == (2, 10)
    dynamic = [n for n, mod in m.named_modules() if isinstance(mod, layer)]
    assert len(dynamic) == 16 and all(n.endswith(("conv1", "conv2")) and n.startswith("layer") for n in dynamic)
    assert type(m.conv1) is torch.nn.Conv2d  # the 7x7 stem stays static
    assert type(m.layer2[0].downsample[0]) is torch.nn.Conv2d  # so do the 1x1 projection shortcuts
    assert m.layer2[0].conv1.stride == (2, 2) and m.layer2[0].conv2.stride == (1, 1)


@pytest.mark.parametrize("build", [dy_resnet, dynet_resnet])
def test_forward_eval_and_train(build):
    torch.manual_seed(0)
    m = build(num_classes=5)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert m.eval()(x).shape == (1, 5)
        y = m.train()(torch.randn(2, 3, 64, 64))
    assert y.shape == (2, 5) and torch.isfinite(y).all()


def test_parameter_counts():
    """ResNet-18 (torchvision) plus, per 3x3 conv (in, out): K - 1 extra kernels, K biases, and the
    attention MLP in -> max(in // 4, 4) -> K (DyConv) or the coefficient FC in -> T (DyNet)."""
    with torch.device("meta"):
        base = n_params(torchvision.models.resnet18())
        dy, dn = n_params(dy_resnet()), n_params(dynet_resnet())
        dy8 = n_params(dy_resnet(num_kernels=8))
    def extra(k, head):
        return sum((k - 1) * i * o * 9 + k * o + head(i, k) for i, o in CONVS_3X3)
    assert dy == base + extra(4, lambda i, k: i * (i // 4) + i // 4 + (i // 4) * k + k) == 44_949_240
    assert dn == base + extra(4, lambda i, k: i * k + k) == 44_674_920
    assert dy8 == base + extra(8, lambda i, k: i * (i // 4) + i // 4 + (i // 4) * k + k)


def test_temperature_reaches_every_dyconv():
    torch.manual_seed(0)
    m = dy_resnet(num_classes=3).eval()
    assert set_temperature(m, temperature_schedule(0)) == 16
    assert all(mod.temperature == 30.0 for mod in m.modules() if isinstance(mod, DyConv2d))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        hot = m(x)
        set_temperature(m, 1.0)
        cold = m(x)
    assert not torch.allclose(hot, cold)  # the temperature is used in forward
    with torch.device("meta"):
        assert set_temperature(dynet_resnet(), 2.0) == 0  # DyNet has no temperature


def test_dynet_starts_as_static_mean_kernel():
    """DyNetConv2d's init: coefficients 1/sqrt(T) for every sample, so the block is input-independent."""
    torch.manual_seed(0)
    m = dynet_resnet(num_classes=3)
    conv = m.layer1[0].conv1
    x = torch.randn(2, 64, 8, 8)
    assert torch.allclose(conv.coefficients(x), torch.full((2, 4), 0.5))


def test_errors_and_registration():
    with pytest.raises(ValueError, match="depth"):
        dy_resnet(depth=50)
    with pytest.raises(ValueError, match="num_kernels"):
        dynet_resnet(num_kernels=0)
    with torch.device("meta"), pytest.raises(InputError, match="C=3"):
        dy_resnet()(torch.empty(1, 4, 32, 32))
    assert get_arch("dy_resnet") is dy_resnet and get_arch("dynet_resnet") is dynet_resnet
    assert issubclass(DyConvBasicBlock, BasicBlock) and issubclass(DyNetBasicBlock, BasicBlock)
    with torch.device("meta"):
        assert type(dy_resnet(num_kernels=2).layer1[0]).num_kernels == 2


def test_export():
    torch.manual_seed(0)
    m = dy_resnet(num_classes=4).eval()
    set_temperature(m, 5.0)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(*exported_and_eager(m, x), atol=1e-5)


def test_small_variants_width_stem_and_static():
    """``width``, the 32x32 ``stem="cifar"`` (3x3 stride-1 conv, no max-pool) and ``dynamic=False``."""
    torch.manual_seed(0)
    m = dy_resnet(num_classes=10, width=0.125, stem="cifar").eval()
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1) and isinstance(m.maxpool, torch.nn.Identity)
    assert [m.layer1[0].conv1.out_channels, m.layer2[0].conv1.out_channels, m.layer3[0].conv1.out_channels,
            m.layer4[0].conv1.out_channels] == [8, 16, 32, 64]
    sizes = []
    m.layer4.register_forward_hook(lambda mod, i, o: sizes.append(tuple(o.shape)))
    with torch.no_grad():
        assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert sizes == [(2, 64, 4, 4)]  # 32x32 reaches layer4 at 4x4 (stride 8 after the stem)
    assert sum(isinstance(mod, DyConv2d) for mod in m.modules()) == 16
    static = dy_resnet(num_classes=10, width=0.125, stem="cifar", dynamic=False)
    assert not any(isinstance(mod, (DyConv2d, DyNetConv2d)) for mod in static.modules())
    assert static.state_dict().keys() == m.state_dict().keys() - {
        k for k in m.state_dict() if ".attention." in k or (k.startswith("layer") and k.endswith("conv1.bias"))
        or (k.startswith("layer") and k.endswith("conv2.bias"))}
    with torch.device("meta"):
        plain = n_params(dy_resnet(dynamic=False))
        assert plain == n_params(torchvision.models.resnet18()) == 11_689_512
        assert n_params(dynet_resnet(width=0.5, stem="cifar", num_classes=10)) > 0
    with pytest.raises(ValueError, match="stem"):
        dy_resnet(stem="tiny")
    with pytest.raises(ValueError, match="width"):
        dy_resnet(width=0)
