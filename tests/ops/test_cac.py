"""Tests for zoo.ops.cac (CaC-Net context-adaptive convolution) particular to it. The shared operator
contract (fast == reference on random shapes, gradcheck, meta device, bfloat16, torch.compile) is
tests/ops/test_contract.py over the "cac" family of tests/support/op_table.py."""
from __future__ import annotations

import pytest
import torch

from zoo.errors import InputError
from zoo.ops.cac import ContextAdaptiveConv, cac_kernels, cac_weighting

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


# 5. training mode -----------------------------------------------------------------------------------
def test_training_mode_batch_one():
    m = ContextAdaptiveConv(4).train()
    out = m(torch.randn(1, 4, 6, 6))
    out.sum().backward()
    assert all(p.grad is not None for p in m.parameters())
