"""Tests of zoo.ops.multiscale particular to it. The shared operator contract (fast == reference on random
shapes, gradcheck, meta device, bfloat16, torch.export) is tests/ops/test_contract.py over the
"multiscale" family of tests/support/op_table.py."""
import pytest
import torch
import torch.nn.functional as F

from support.op_table import TinySegNet
from zoo.errors import InputError
from zoo.ops.multiscale import MultiScaleFusion, multiscale_fusion


# 1. shapes ------------------------------------------------------------------------------------------
def test_shapes_eval_and_train():
    m = MultiScaleFusion(TinySegNet())
    x = torch.randn(2, 3, 33, 41)
    assert m.eval()(x).shape == (2, 3, 9, 11)
    outs = m.train()(x)
    # per-scale logits at their own resolution (input floor(H * s)), then the fused logits
    assert [tuple(o.shape[-2:]) for o in outs] == [(9, 11), (6, 8), (4, 5), (9, 11)]
    assert MultiScaleFusion(TinySegNet(), return_all=False).train()(x).shape == (2, 3, 9, 11)


def test_caffe_sizes():
    seen = []
    net = TinySegNet()
    fn = lambda x: seen.append(tuple(x.shape[-2:])) or net(x)  # noqa: E731
    multiscale_fusion(fn, torch.randn(1, 3, 513, 321), align_corners=True)
    assert seen == [(513, 321), (385, 241), (257, 161)]
    seen.clear()
    multiscale_fusion(fn, torch.randn(1, 3, 513, 321))
    assert seen == [(513, 321), (384, 240), (256, 160)]


# 2. exceptions --------------------------------------------------------------------------------------
def test_errors():
    net = TinySegNet()
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


# 3. equals the MSC formula --------------------------------------------------------------------------
def test_matches_msc_formula():
    # kazuto1011's MSC written out: max over [f(x)] + resized f(interpolate(x, scale_factor=s))
    net = TinySegNet()
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
    net = TinySegNet()
    x = torch.randn(1, 3, 20, 20)
    assert torch.equal(multiscale_fusion(net, x, (1.0,)), net(x))
