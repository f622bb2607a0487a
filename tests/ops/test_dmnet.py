"""Tests for zoo.ops.dmnet (DMNet Dynamic Convolutional Module)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zoo.errors import InputError
from zoo.ops.dmnet import DynamicConvModule, dynamic_depthwise_conv2d, dynamic_depthwise_conv2d_reference, same_padding

TOL = {torch.float32: dict(atol=1e-5, rtol=1e-4), torch.float64: dict(atol=1e-12, rtol=1e-10)}


def _randomise_bn(m: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for bn in m.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            with torch.no_grad():
                bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.1)
                bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
                bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
                bn.bias.copy_(torch.randn(bn.num_features, generator=g) * 0.1)


def _module_reference(m: DynamicConvModule, x: torch.Tensor) -> torch.Tensor:
    """mmseg's DCM forward written out with the reference dynamic conv."""
    filters = m.filter_gen_conv(F.adaptive_avg_pool2d(x, m.filter_size))
    out = dynamic_depthwise_conv2d_reference(m.input_redu_conv(x), filters)
    out = m.activate(m.norm(out)) if m.norm is not None else m.activate(out)
    return m.fusion_conv(out) if m.fusion_conv is not None else out


# 1. shapes ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 7])
def test_shapes(k):
    m = DynamicConvModule(8, 6, k)
    x = torch.randn(2, 8, 9, 11)
    assert m(x).shape == (2, 6, 9, 11)
    assert m.generate_filters(x).shape == (2, 6, k, k)
    assert DynamicConvModule(8, 6, k, fusion=True, norm=False)(x).shape == (2, 6, 9, 11)


def test_mmseg_key_names():
    keys = set(DynamicConvModule(16, 4, 3, fusion=True).state_dict())
    bn = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}
    expected = {"filter_gen_conv.weight", "filter_gen_conv.bias", "input_redu_conv.conv.weight",
                "fusion_conv.conv.weight"}
    expected |= {f"{p}.{b}" for p in ("input_redu_conv.bn", "norm", "fusion_conv.bn") for b in bn}
    assert keys == expected
    assert DynamicConvModule(16, 4, 3).input_redu_conv.conv.bias is None  # mmcv bias='auto' with a norm


def test_same_padding_matches_mmseg():
    for k in range(1, 8):  # mmseg: pad=(k-1)//2; odd k symmetric, even k (pad+1, pad, pad+1, pad)
        pad = (k - 1) // 2
        expected = (pad, pad, pad, pad) if (k - 1) % 2 == 0 else (pad + 1, pad, pad + 1, pad)
        assert same_padding(k) == expected


# 2. exceptions --------------------------------------------------------------------------------------
def test_exceptions():
    m = DynamicConvModule(8, 6, 3)
    with pytest.raises(InputError, match="C=8"):
        m(torch.randn(1, 7, 5, 5))
    with pytest.raises(InputError, match="filters"):
        dynamic_depthwise_conv2d(torch.randn(2, 3, 5, 5), torch.randn(1, 3, 3, 3))
    with pytest.raises(InputError, match="floating"):
        dynamic_depthwise_conv2d(torch.ones(1, 3, 5, 5, dtype=torch.long), torch.ones(1, 3, 3, 3, dtype=torch.long))
    with pytest.raises(InputError, match="dtype"):
        dynamic_depthwise_conv2d(torch.randn(1, 3, 5, 5), torch.randn(1, 3, 3, 3, dtype=torch.float64))
    with pytest.raises(ValueError):
        DynamicConvModule(8, 6, 0)


# 3. fast == reference -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("shape,dilation", [((1, 3, 7, 9), 1), ((3, 2, 6, 5), 1), ((2, 4, 11, 8), 2)])
def test_functional_fast_matches_reference(dtype, k, shape, dilation):
    x = torch.randn(shape, dtype=dtype)
    f = torch.randn(shape[0], shape[1], k, k, dtype=dtype)
    out = dynamic_depthwise_conv2d(x, f, dilation)
    assert out.shape == x.shape
    torch.testing.assert_close(out, dynamic_depthwise_conv2d_reference(x, f, dilation), **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k,fusion,shape", [(1, False, (2, 8, 7, 9)), (2, True, (3, 8, 6, 5)),
                                            (5, False, (1, 8, 9, 13))])
def test_module_matches_reference(dtype, k, fusion, shape):
    torch.manual_seed(0)
    m = DynamicConvModule(8, 5, k, fusion=fusion, dtype=dtype)
    _randomise_bn(m)
    m.eval()
    x = torch.randn(shape, dtype=dtype)
    torch.testing.assert_close(m(x), _module_reference(m, x), **TOL[dtype])


# 4. exact answers -----------------------------------------------------------------------------------
def test_even_kernel_pads_top_left():
    x = torch.arange(1.0, 10.0).view(1, 1, 3, 3)
    f = torch.zeros(1, 1, 2, 2)
    f[..., 1, 1] = 1  # the bottom-right tap sits on the output pixel itself
    assert torch.equal(dynamic_depthwise_conv2d(x, f), x)
    f = torch.zeros(1, 1, 2, 2)
    f[..., 0, 0] = 1  # the top-left tap reads the up-left neighbour (zero outside)
    assert torch.equal(dynamic_depthwise_conv2d(x, f), torch.tensor([[[[0.0, 0, 0], [0, 1, 2], [0, 4, 5]]]]))


def test_filters_are_per_sample_and_channel():
    x = torch.ones(2, 2, 4, 4)
    f = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(2, 2, 1, 1)
    out = dynamic_depthwise_conv2d(x, f)
    assert torch.equal(out[:, :, 0, 0], torch.tensor([[1.0, 2.0], [3.0, 4.0]]))


def test_filter_size_one_scales_channels_by_pooled_projection():
    torch.manual_seed(0)
    m = DynamicConvModule(4, 3, 1, norm=False)
    x = torch.randn(2, 4, 5, 6)
    scale = m.filter_gen_conv(x.mean((2, 3), keepdim=True))  # adaptive_avg_pool2d(x, 1) = global mean
    torch.testing.assert_close(m(x), F.relu(m.input_redu_conv(x) * scale))


# 5. gradcheck ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [2, 3])
def test_gradcheck(k):
    x = torch.randn(2, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    f = torch.randn(2, 2, k, k, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(dynamic_depthwise_conv2d, (x, f))


# 6. meta device -------------------------------------------------------------------------------------
def test_meta_device():
    with torch.device("meta"):
        m = DynamicConvModule(16, 8, 4, fusion=True)
        out = m(torch.empty(2, 16, 9, 9))
    assert out.device.type == "meta" and out.shape == (2, 8, 9, 9)


# 7. bfloat16 ----------------------------------------------------------------------------------------
def test_bfloat16_forward():
    torch.manual_seed(0)
    m = DynamicConvModule(8, 6, 3).eval()
    x = torch.randn(2, 8, 9, 7)
    expected = m(x)
    out = m.to(torch.bfloat16)(x.bfloat16())
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), expected, atol=0.05 * expected.abs().max().item(), rtol=0.05)


# 8. torch.compile -----------------------------------------------------------------------------------
def test_compile():
    torch.manual_seed(0)
    m = DynamicConvModule(8, 6, 2).eval()
    x = torch.randn(2, 8, 7, 9)
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), m(x))
