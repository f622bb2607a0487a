"""Tests of zoo.ops.dynet (DyNet, Zhang et al. 2020) particular to it. The shared operator contract
(dynet_conv2d == dynet_conv2d_reference on random shapes, gradcheck of the op and through the coefficient
predictor, meta device, bfloat16, torch.compile) is tests/ops/test_contract.py over the "dynet" family of
tests/support/op_table.py."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from zoo.errors import InputError
from zoo.ops.dynet import DyNetConv2d, dynet_conv2d, dynet_conv2d_reference

# (B, C, out, H, W, k, stride, padding, dilation, groups, T)
CASES = [
    (1, 3, 5, 7, 7, (3, 3), 1, 1, 1, 1, 4),
    (3, 4, 6, 9, 6, (3, 1), 2, (1, 0), 1, 2, 2),
    (2, 6, 3, 11, 8, (3, 3), 1, 2, 2, 3, 6),
    (4, 4, 4, 5, 13, (1, 1), 1, 0, 1, 4, 1),
]


def _inputs(case, dtype=torch.float32):
    b, c, out, h, w, k, stride, padding, dilation, groups, t = case
    x = torch.randn(b, c, h, w, dtype=dtype)
    coefficients = 2 * torch.randn(b, t, dtype=dtype)  # unconstrained: negative and > 1 values
    bank = torch.randn(t, out, c // groups, *k, dtype=dtype)
    bias = torch.randn(t, out, dtype=dtype)
    return x, coefficients, bank, bias, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


# 1. shapes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_kernels", [1, 3, 8])
def test_shapes(num_kernels):
    layer = DyNetConv2d(8, 6, 3, stride=2, padding=1, groups=2, num_kernels=num_kernels)
    assert layer.bank.shape == (num_kernels, 6, 4, 3, 3) and layer.bias.shape == (num_kernels, 6)
    x = torch.randn(3, 8, 9, 10)
    assert layer.coefficients(x).shape == (3, num_kernels)
    assert layer(x).shape == (3, 6, 5, 5)
    assert DyNetConv2d(8, 6, bias=False).bias is None


# 2. exceptions --------------------------------------------------------------------------------------


def test_errors():
    x, coefficients, bank, bias, kw = _inputs(CASES[1])
    with pytest.raises(InputError, match="coefficients must have T=2"):
        dynet_conv2d(x, coefficients[:, :1], bank, bias, **kw)
    with pytest.raises(InputError, match="coefficients must have B=3"):
        dynet_conv2d(x, coefficients[:1], bank, bias, **kw)
    with pytest.raises(InputError, match="bank must have in_per_group=4"):
        dynet_conv2d(x, coefficients, bank, bias, **{**kw, "groups": 1})
    with pytest.raises(InputError, match="floating-point"):
        dynet_conv2d(x.int(), coefficients, bank, bias, **kw)
    with pytest.raises(InputError, match="x must have C=4"):
        DyNetConv2d(4, 4)(torch.randn(2, 3, 5, 5))
    with pytest.raises(ValueError):
        DyNetConv2d(4, 4, num_kernels=0)


# 3. module == reference after a training step -------------------------------------------------------


def test_module_matches_reference_after_training_step():
    layer = DyNetConv2d(6, 4, (3, 5), stride=(1, 2), padding=(1, 2), groups=2, num_kernels=3)
    x = torch.randn(3, 6, 8, 9)
    layer(x).square().mean().backward()
    assert layer.coefficient_fc.weight.grad.abs().sum() > 0  # the zero-initialised predictor learns
    with torch.no_grad():
        layer.coefficient_fc.weight.normal_()
    expected = dynet_conv2d_reference(x, layer.coefficients(x), layer.bank, layer.bias, (1, 2), (1, 2), 1, 2)
    torch.testing.assert_close(layer(x), expected)


# 4. exact answers -----------------------------------------------------------------------------------


def test_initialisation_is_static_variance_preserving_conv():
    layer = DyNetConv2d(4, 6, 3, padding=1, num_kernels=4)
    x = torch.randn(3, 4, 7, 5)
    torch.testing.assert_close(layer.coefficients(x), torch.full((3, 4), 0.5))
    expected = F.conv2d(x, layer.bank.sum(0) / math.sqrt(4), layer.bias.sum(0) / math.sqrt(4), padding=1)
    torch.testing.assert_close(layer(x), expected)


def test_linear_in_coefficients():
    x, coefficients, bank, bias, kw = _inputs(CASES[0])
    y1 = dynet_conv2d(x, coefficients, bank, bias, **kw)
    torch.testing.assert_close(dynet_conv2d(x, -2 * coefficients, bank, bias, **kw), -2 * y1)
    one_hot = torch.zeros_like(coefficients)
    one_hot[:, 1] = 1
    torch.testing.assert_close(dynet_conv2d(x, one_hot, bank, bias, **kw), F.conv2d(x, bank[1], bias[1], **kw))
