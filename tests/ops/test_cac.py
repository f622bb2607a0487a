"""Tests for zoo.ops.cac (CaC-Net context-adaptive convolution)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zoo.errors import InputError
from zoo.ops.cac import ContextAdaptiveConv, cac_kernels, cac_kernels_reference, cac_weighting, cac_weighting_reference

TOL = {torch.float32: dict(atol=1e-5, rtol=1e-4), torch.float64: dict(atol=1e-12, rtol=1e-10)}


def _module_reference(m: ContextAdaptiveConv, x: torch.Tensor) -> torch.Tensor:
    """The module written out with the reference functionals and an explicit per-head/per-set BN."""
    b, c, h, w = x.shape
    s, n, heads = m.kernel_size, m.num_kernel_sets, m.heads
    kernels = torch.empty(b, heads, len(m.dilations), c, s, s, dtype=x.dtype)
    key, query = m.key_conv(x), m.query_conv(x)
    for head in range(heads):
        d = cac_kernels_reference(key[:, head * c: (head + 1) * c], query[:, head * n * s * s: (head + 1) * n * s * s])
        for i in range(len(m.dilations)):
            j = i if m.separate_kernels else 0
            dk = d[:, :, j * s * s: (j + 1) * s * s].reshape(b, c, s, s)
            if m.kernel_bn is not None:  # eval-mode BN of channel (head, set, c)
                bn = m.kernel_bn
                idx = slice((head * n + j) * c, (head * n + j + 1) * c)
                scale = bn.weight[idx] / torch.sqrt(bn.running_var[idx] + bn.eps)
                mean, shift = bn.running_mean[idx].view(1, c, 1, 1), bn.bias[idx].view(1, c, 1, 1)
                dk = (dk - mean) * scale.view(1, c, 1, 1) + shift
            kernels[:, head, i] = dk
    out = x * cac_weighting_reference(x, kernels, m.dilations, m.fusion)
    if m.global_conv is not None:
        out = out + F.relu(m.global_conv(x.mean((2, 3), keepdim=True)))
    return out


def _prepare(m: ContextAdaptiveConv, seed: int = 0) -> ContextAdaptiveConv:
    g = torch.Generator().manual_seed(seed)
    if m.kernel_bn is not None:
        with torch.no_grad():
            nf = m.kernel_bn.num_features
            m.kernel_bn.running_mean.copy_(torch.randn(nf, generator=g) * 0.1)
            m.kernel_bn.running_var.copy_(torch.rand(nf, generator=g) + 0.5)
            m.kernel_bn.weight.copy_(torch.rand(nf, generator=g) + 0.5)
            m.kernel_bn.bias.copy_(torch.randn(nf, generator=g) * 0.1)
    return m.eval()


# 1. shapes ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [{}, dict(heads=3), dict(separate_kernels=False, fusion="sum_sigmoid"),
                                    dict(kernel_size=5, dilations=(1, 2), kernel_norm=False, global_pool=False)])
def test_shapes(kwargs):
    m = ContextAdaptiveConv(6, **kwargs)
    x = torch.randn(2, 6, 9, 11)
    assert m(x).shape == x.shape
    s = m.kernel_size
    assert m.predict_kernels(x).shape == (2, m.heads, len(m.dilations), 6, s, s)
    assert m.key_conv.out_channels == m.heads * 6
    assert m.query_conv.out_channels == m.heads * m.num_kernel_sets * s * s


def test_kernel_shapes_functional():
    assert cac_kernels(torch.randn(2, 5, 4, 7), torch.randn(2, 9, 4, 7)).shape == (2, 5, 9)
    assert cac_weighting(torch.randn(2, 5, 4, 7), torch.randn(2, 2, 3, 5, 3, 3)).shape == (2, 5, 4, 7)


# 2. exceptions --------------------------------------------------------------------------------------
def test_exceptions():
    with pytest.raises(InputError, match="C=6"):
        ContextAdaptiveConv(6)(torch.randn(1, 5, 8, 8))
    with pytest.raises(InputError, match="query"):
        cac_kernels(torch.randn(2, 5, 4, 7), torch.randn(2, 9, 4, 6))
    with pytest.raises(InputError, match="D=3"):
        cac_weighting(torch.randn(2, 5, 4, 7), torch.randn(2, 1, 2, 5, 3, 3))
    with pytest.raises(InputError, match="odd"):
        cac_weighting(torch.randn(2, 5, 4, 7), torch.randn(2, 1, 3, 5, 2, 2))
    with pytest.raises(InputError, match="fusion"):
        cac_weighting(torch.randn(2, 5, 4, 7), torch.randn(2, 1, 3, 5, 3, 3), fusion="max")
    with pytest.raises(ValueError, match="odd"):
        ContextAdaptiveConv(6, kernel_size=4)
    with pytest.raises(ValueError, match="fusion"):
        ContextAdaptiveConv(6, fusion="product")


# 3. fast == reference -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 4, 7, 9), (3, 2, 6, 5)])
def test_kernels_fast_matches_reference(dtype, shape):
    key = torch.randn(shape, dtype=dtype)
    query = torch.randn(shape[0], 9, *shape[2:], dtype=dtype) * 3
    torch.testing.assert_close(cac_kernels(key, query), cac_kernels_reference(key, query), **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fusion", ["sigmoid_sum", "sum_sigmoid"])
@pytest.mark.parametrize("shape,heads,s", [((1, 3, 7, 9), 1, 3), ((2, 4, 11, 6), 2, 3), ((3, 2, 8, 8), 3, 5)])
def test_weighting_fast_matches_reference(dtype, fusion, shape, heads, s):
    x = torch.randn(shape, dtype=dtype)
    kernels = torch.randn(shape[0], heads, 3, shape[1], s, s, dtype=dtype)
    torch.testing.assert_close(cac_weighting(x, kernels, (1, 3, 5), fusion),
                               cac_weighting_reference(x, kernels, (1, 3, 5), fusion), **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kwargs,shape", [({}, (2, 6, 9, 7)), (dict(heads=2, fusion="sum_sigmoid"), (1, 6, 10, 13)),
                                          (dict(separate_kernels=False, heads=2), (3, 6, 7, 7))])
def test_module_matches_reference(dtype, kwargs, shape):
    torch.manual_seed(0)
    m = _prepare(ContextAdaptiveConv(6, dtype=dtype, **kwargs))
    x = torch.randn(shape, dtype=dtype)
    torch.testing.assert_close(m(x), _module_reference(m, x), **TOL[dtype])


# 4. exact answers -----------------------------------------------------------------------------------
def test_uniform_query_gives_spatial_mean_of_key():
    key = torch.randn(2, 3, 5, 4)
    out = cac_kernels(key, torch.zeros(2, 9, 5, 4))
    torch.testing.assert_close(out, key.mean((2, 3))[:, :, None].expand(2, 3, 9))


def test_peaked_query_picks_the_key_at_the_peak():
    key = torch.randn(1, 3, 4, 4)
    query = torch.full((1, 2, 4, 4), -1e4)
    query[0, 0, 1, 2] = 0.0
    query[0, 1, 3, 0] = 0.0
    out = cac_kernels(key, query)
    assert torch.equal(out[0, :, 0], key[0, :, 1, 2]) and torch.equal(out[0, :, 1], key[0, :, 3, 0])


def test_zero_kernels_give_constant_weights():
    x = torch.randn(2, 3, 6, 5)
    zero = torch.zeros(2, 1, 3, 3, 3, 3)
    assert torch.equal(cac_weighting(x, zero, fusion="sigmoid_sum"), torch.full_like(x, 0.5))
    assert torch.equal(cac_weighting(x, zero, fusion="sum_sigmoid"), torch.full_like(x, 1.5))


def test_centre_tap_kernel_weights_by_sigmoid_of_scaled_input():
    x = torch.randn(1, 2, 5, 6)
    kernels = torch.zeros(1, 1, 3, 2, 3, 3)
    kernels[..., 1, 1] = torch.tensor([1.0, 2.0, 3.0]).view(1, 1, 3, 1)  # dilation d: centre tap d-independent
    torch.testing.assert_close(cac_weighting(x, kernels), torch.sigmoid(6 * x))


# 5. gradcheck ---------------------------------------------------------------------------------------
def test_gradcheck():
    key = torch.randn(2, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    query = torch.randn(2, 4, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(cac_kernels, (key, query))
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    kernels = torch.randn(1, 2, 3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    for fusion in ("sigmoid_sum", "sum_sigmoid"):
        assert torch.autograd.gradcheck(lambda a, k: cac_weighting(a, k, (1, 3, 5), fusion), (x, kernels))


# 6. meta device -------------------------------------------------------------------------------------
def test_meta_device():
    with torch.device("meta"):
        m = ContextAdaptiveConv(16, heads=2)
        out = m(torch.empty(2, 16, 9, 9))
    assert out.device.type == "meta" and out.shape == (2, 16, 9, 9)


# 7. bfloat16 ----------------------------------------------------------------------------------------
def test_bfloat16_forward():
    torch.manual_seed(0)
    m = _prepare(ContextAdaptiveConv(8, heads=2))
    x = torch.randn(2, 8, 9, 7)
    expected = m(x)
    out = m.to(torch.bfloat16)(x.bfloat16())
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), expected, atol=0.05 * expected.abs().max().item(), rtol=0.05)


def test_training_mode_batch_one():
    m = ContextAdaptiveConv(4).train()
    out = m(torch.randn(1, 4, 6, 6))
    out.sum().backward()
    assert all(p.grad is not None for p in m.parameters())


# 8. torch.compile -----------------------------------------------------------------------------------
def test_compile():
    torch.manual_seed(0)
    m = _prepare(ContextAdaptiveConv(6, heads=2))
    x = torch.randn(2, 6, 7, 9)
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), m(x))
