"""zoo.models.dy_mobilenet: DY-MobileNetV2 shapes, dynamic-layer placement, parameter count, temperature, export."""
import pytest
import torch
import torchvision
from support.export_check import exported_and_eager

from zoo.archs import get_arch
from zoo.errors import InputError
from zoo.models.dy_mobilenet import DyMobileNetV2, dy_mobilenetv2
from zoo.ops.dy_conv import DyConv2d, set_temperature, temperature_schedule


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_meta_build_and_placement():
    with torch.device("meta"):
        m = dy_mobilenetv2(num_classes=10)
        assert m(torch.empty(2, 3, 64, 64)).shape == (2, 10)
    assert type(m.features[0][0]) is torch.nn.Conv2d and type(m.features[18][0]) is torch.nn.Conv2d
    dyn = [mod for mod in m.modules() if isinstance(mod, DyConv2d)]
    assert len(dyn) == 2 + 3 * 16  # block 1 (t = 1): depthwise + projection; 16 blocks: expand, dw, project
    dw = m.features[2].conv[1][0]
    assert isinstance(dw, DyConv2d) and dw.groups == dw.in_channels == 96 and dw.stride == (2, 2)
    # same keys as torchvision's MobileNetV2 except the dynamic convs' extra tensors
    with torch.device("meta"):
        tv = set(torchvision.models.mobilenet_v2().state_dict())
    ours = set(m.state_dict())
    assert tv <= ours and all(k.endswith(("bias", "attention.fc1.weight", "attention.fc2.weight")) for k in ours - tv)


def test_forward_eval_and_train():
    torch.manual_seed(0)
    m = dy_mobilenetv2(num_classes=5)
    with torch.no_grad():
        assert m.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 5)
        y = m.train()(torch.randn(2, 3, 64, 64))
    assert y.shape == (2, 5) and torch.isfinite(y).all()


def test_parameter_count():
    """torchvision MobileNetV2 + for each dynamic conv: K - 1 extra kernels, K biases, attention MLP."""
    with torch.device("meta"):
        m = dy_mobilenetv2()
        base = n_params(torchvision.models.mobilenet_v2())
        head = n_params(dy_mobilenetv2(dynamic_head=True))
    extra = 0
    for mod in m.modules():
        if isinstance(mod, DyConv2d):
            i, o, g, k = mod.in_channels, mod.out_channels, mod.groups, mod.kernel_size[0]
            h = max(i // 4, 4)
            extra += 3 * o * (i // g) * k * k + 4 * o + i * h + h + h * 4 + 4
    assert n_params(m) == base + extra == 11_212_712  # paper (Table): DY-MobileNetV2 x1.0 11.1M
    assert head == 12_472_636


def test_temperature_reaches_every_dyconv():
    torch.manual_seed(0)
    m = dy_mobilenetv2(num_classes=3).eval()
    assert set_temperature(m, temperature_schedule(5)) == 50
    assert {mod.temperature for mod in m.modules() if isinstance(mod, DyConv2d)} == {15.5}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        warm = m(x)
        set_temperature(m, 1.0)
        assert not torch.allclose(warm, m(x))


def test_errors_and_registration():
    with pytest.raises(ValueError, match="width_mult"):
        DyMobileNetV2(width_mult=0)
    with pytest.raises(ValueError, match="num_kernels"):
        dy_mobilenetv2(num_kernels=0)
    with torch.device("meta"), pytest.raises(InputError, match="C=3"):
        dy_mobilenetv2()(torch.empty(1, 1, 32, 32))
    assert get_arch("dy_mobilenetv2") is dy_mobilenetv2


def test_export():
    torch.manual_seed(0)
    m = dy_mobilenetv2(num_classes=4).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(*exported_and_eager(m, x), atol=1e-5)
