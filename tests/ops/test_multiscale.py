import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import InputError
from zoo.ops.multiscale import MultiScaleFusion, multiscale_fusion, multiscale_fusion_reference


class _Net(nn.Module):
    """A small stride-4 'segmentation net': conv stride 2 -> ReLU -> conv stride 2 -> K logits."""

    def __init__(self, k: int = 3, dtype=torch.float32) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(3, 4, 3, stride=2, padding=1, dtype=dtype)
        self.b = nn.Conv2d(4, k, 3, stride=2, padding=1, dtype=dtype)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


# 1. shapes ------------------------------------------------------------------------------------------
def test_shapes_eval_and_train():
    m = MultiScaleFusion(_Net())
    x = torch.randn(2, 3, 33, 41)
    assert m.eval()(x).shape == (2, 3, 9, 11)
    outs = m.train()(x)
    # per-scale logits at their own resolution (input floor(H * s)), then the fused logits
    assert [tuple(o.shape[-2:]) for o in outs] == [(9, 11), (6, 8), (4, 5), (9, 11)]
    assert MultiScaleFusion(_Net(), return_all=False).train()(x).shape == (2, 3, 9, 11)


def test_caffe_sizes():
    seen = []
    net = _Net()
    fn = lambda x: seen.append(tuple(x.shape[-2:])) or net(x)  # noqa: E731
    multiscale_fusion(fn, torch.randn(1, 3, 513, 321), align_corners=True)
    assert seen == [(513, 321), (385, 241), (257, 161)]
    seen.clear()
    multiscale_fusion(fn, torch.randn(1, 3, 513, 321))
    assert seen == [(513, 321), (384, 240), (256, 160)]


# 2. exceptions --------------------------------------------------------------------------------------
def test_errors():
    net = _Net()
    with pytest.raises(InputError):
        multiscale_fusion(net, torch.randn(3, 16, 16))
    with pytest.raises(InputError, match="floating"):
        multiscale_fusion(net, torch.ones(1, 3, 16, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="1.0"):
        multiscale_fusion(net, torch.randn(1, 3, 16, 16), scales=(0.5, 0.75))
    with pytest.raises(ValueError, match="fuse"):
        multiscale_fusion(net, torch.randn(1, 3, 16, 16), fuse="min")
    with pytest.raises(ValueError):
        MultiScaleFusion(net, scales=(1.0, -0.5))


# 3. fast == reference -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
@pytest.mark.parametrize("shape", [(1, 3, 33, 33), (2, 3, 29, 50), (3, 3, 16, 17)])
@pytest.mark.parametrize("fuse,align", [("max", False), ("mean", False), ("max", True)])
def test_fast_matches_reference(dtype, tol, shape, fuse, align):
    net = _Net(dtype=dtype)
    x = torch.randn(*shape, dtype=dtype)
    scales = (1.0, 0.75, 0.5, 1.25)
    fast = multiscale_fusion(net, x, scales, fuse, align, return_all=True)
    ref = multiscale_fusion_reference(net, x, scales, fuse, align, return_all=True)
    assert len(fast) == len(ref) == 5
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_matches_msc_formula():
    # kazuto1011's MSC written out: max over [f(x)] + resized f(interpolate(x, scale_factor=s))
    net = _Net()
    x = torch.randn(1, 3, 37, 45)
    y = net(x)
    per = [F.interpolate(net(F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)),
                         size=y.shape[-2:], mode="bilinear", align_corners=False) for s in (0.5, 0.75)]
    expected = torch.max(torch.stack([y] + per), dim=0)[0]
    torch.testing.assert_close(multiscale_fusion(net, x, (1.0, 0.5, 0.75)), expected)


# 4. exact answers -----------------------------------------------------------------------------------
def test_exact_constant_input():
    # a module returning a constant map per scale: the fused map is the max / mean of the constants
    for fuse, expected in [("max", 3.0), ("mean", 2.0)]:
        fn = lambda x: torch.full((1, 1, 4, 4), 4.0 * x.shape[-1] / 8 - 1)  # noqa: E731  s=1: 3, 0.75: 2, 0.5: 1
        out = multiscale_fusion(fn, torch.zeros(1, 3, 8, 8), (1.0, 0.75, 0.5), fuse)
        assert torch.equal(out, torch.full((1, 1, 4, 4), expected))


def test_single_scale_is_identity():
    net = _Net()
    x = torch.randn(1, 3, 20, 20)
    assert torch.equal(multiscale_fusion(net, x, (1.0,)), net(x))


# 5. gradcheck ---------------------------------------------------------------------------------------
def test_gradcheck():
    net = _Net(dtype=torch.float64)
    x = torch.randn(1, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: multiscale_fusion(net, x, (1.0, 0.5), "mean"), (x,))


# 6. meta device -------------------------------------------------------------------------------------
def test_meta():
    with torch.device("meta"):
        m = MultiScaleFusion(_Net()).eval()
        y = m(torch.empty(2, 3, 65, 65))
    assert y.is_meta and y.shape == (2, 3, 17, 17)


# 7. bfloat16 ----------------------------------------------------------------------------------------
def test_bfloat16():
    net = _Net()
    x = torch.randn(1, 3, 24, 24)
    y = multiscale_fusion(net.bfloat16(), x.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), multiscale_fusion(net.float(), x), rtol=0.05, atol=0.05)


# 8. export ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("align", [False, True])
def test_export(align):
    m = MultiScaleFusion(_Net(), align_corners=align).eval()
    x = torch.randn(1, 3, 33, 29)
    prog = torch.export.export(m, (x,))
    torch.testing.assert_close(prog.module()(x), m(x))
