"""Tests of zoo.ops.dynamic_filter (DFN dynamic convolution, dynamic local filtering, shared helpers)
particular to it. The shared operator contract (dynamic_conv2d, dynamic_local_filter and
kernel_mixture_conv2d == their references on random shapes, gradcheck, meta device, bfloat16,
torch.compile) is tests/ops/test_contract.py over the "dynamic_filter" family of tests/support/op_table.py;
CondConv, DyNet and DyConv, thin wrappers of the kernel mixture, have families of their own there."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from support.op_table import CONV_CASES, conv_inputs
from zoo.errors import InputError
from zoo.ops.dynamic_filter import (
    DynamicConv2d,
    DynamicLocalFilter,
    MixtureNames,
    dynamic_conv2d,
    dynamic_conv2d_reference,
    dynamic_local_filter,
    kernel_mixture_conv2d,
    kernel_mixture_conv2d_reference,
    mix_kernels,
    per_sample_conv2d,
)

# 1. shapes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CONV_CASES)
def test_dynamic_conv2d_shape_matches_conv2d(case):
    x, filters, bias, kw = conv_inputs(case)
    expected = F.conv2d(x[:1], filters[0], bias[0], **kw).shape[1:]
    assert dynamic_conv2d(x, filters, bias, **kw).shape == (x.shape[0], *expected)


def test_local_filter_and_modules_shapes():
    x = torch.randn(2, 5, 6, 7)
    assert dynamic_local_filter(x, torch.randn(2, 9, 6, 7), 3).shape == x.shape
    assert DynamicLocalFilter(3, dilation=2)(x, torch.randn(2, 45, 6, 7)).shape == x.shape
    layer = DynamicConv2d(5, 8, (3, 5), padding=(1, 2), bias=True)
    assert layer(x, torch.randn(2, *layer.filter_shape)).shape == (2, 8, 6, 7)
    assert dict(layer.named_parameters()).keys() == {"bias"}
    assert list(DynamicLocalFilter(3).parameters()) == []


def test_empty_batch():
    out = per_sample_conv2d(torch.randn(0, 4, 6, 6), torch.randn(0, 4, 2, 3, 3), None, 1, 1, 1, 2)
    assert out.shape == (0, 4, 6, 6)


def test_mix_kernels_shapes_and_values():
    coeff, bank, bias = torch.randn(3, 4), torch.randn(4, 2, 5, 3, 3), torch.randn(4, 2)
    kernels, biases = mix_kernels(coeff, bank, bias)
    assert kernels.shape == (3, 2, 5, 3, 3) and biases.shape == (3, 2)
    torch.testing.assert_close(kernels[1], sum(coeff[1, e] * bank[e] for e in range(4)))
    assert mix_kernels(coeff, bank)[1] is None


def test_kernel_mixture_shape_and_one_hot_is_conv():
    x, bank, bias = torch.randn(2, 4, 7, 5), torch.randn(3, 6, 2, 3, 3), torch.randn(3, 6)
    coefficients = torch.tensor([[0.0, 1, 0], [0, 0, 1]])
    out = kernel_mixture_conv2d(x, coefficients, bank, bias, padding=1, groups=2)
    assert out.shape == (2, 6, 7, 5)
    for b, e in [(0, 1), (1, 2)]:
        torch.testing.assert_close(out[b : b + 1], F.conv2d(x[b : b + 1], bank[e], bias[e], padding=1, groups=2))


# 2. exceptions --------------------------------------------------------------------------------------


def test_dynamic_conv2d_errors():
    x = torch.randn(2, 4, 5, 5)
    with pytest.raises(InputError, match="x must have shape"):
        dynamic_conv2d(x[0], torch.randn(2, 3, 4, 3, 3))
    with pytest.raises(InputError, match="filters must have B=2"):
        dynamic_conv2d(x, torch.randn(3, 3, 4, 3, 3))
    with pytest.raises(InputError, match="in_per_group=2"):
        dynamic_conv2d(x, torch.randn(2, 4, 4, 3, 3), groups=2)
    with pytest.raises(InputError, match="groups=3 does not divide"):
        dynamic_conv2d(x, torch.randn(2, 3, 1, 3, 3), groups=3)
    with pytest.raises(InputError, match="bias must have"):
        dynamic_conv2d(x, torch.randn(2, 3, 4, 3, 3), torch.randn(2, 4))
    with pytest.raises(InputError, match="floating-point"):
        dynamic_conv2d(x.long(), torch.randn(2, 3, 4, 3, 3))
    with pytest.raises(InputError, match="share device and dtype"):
        dynamic_conv2d(x, torch.randn(2, 3, 4, 3, 3, dtype=torch.float64))
    with pytest.raises(InputError, match="kh=3"):
        DynamicConv2d(4, 3, 3)(x, torch.randn(2, 3, 4, 5, 5))
    with pytest.raises(ValueError):
        DynamicConv2d(4, 3, 3, groups=2)


def test_local_filter_errors():
    x = torch.randn(2, 3, 5, 6)
    with pytest.raises(InputError, match="k\\*k=9 channels"):
        dynamic_local_filter(x, torch.randn(2, 10, 5, 6), 3)
    with pytest.raises(InputError, match="odd"):
        dynamic_local_filter(x, torch.randn(2, 4, 5, 6), 2)
    with pytest.raises(InputError, match="filters must have H=5"):
        dynamic_local_filter(x, torch.randn(2, 9, 6, 6), 3)
    with pytest.raises(InputError, match="dilation"):
        dynamic_local_filter(x, torch.randn(2, 9, 5, 6), 3, dilation=0)
    with pytest.raises(ValueError):
        DynamicLocalFilter(4)


def test_kernel_mixture_errors_name_the_callers_tensors():
    x, coefficients, bank, bias = torch.randn(3, 4, 5, 5), torch.rand(3, 2), torch.randn(2, 6, 2, 3, 3), torch.randn(2, 6)
    kw = dict(padding=1, groups=2)
    with pytest.raises(InputError, match="coefficients must have E=2"):
        kernel_mixture_conv2d(x, coefficients[:, :1], bank, bias, **kw)
    with pytest.raises(InputError, match="coefficients must have B=3"):
        kernel_mixture_conv2d_reference(x, coefficients[:2], bank, bias, **kw)
    with pytest.raises(InputError, match="bank must have in_per_group=4"):
        kernel_mixture_conv2d(x, coefficients, bank, bias, padding=1)
    with pytest.raises(InputError, match=r"bias must have out=6 in shape \(E,out\)"):
        kernel_mixture_conv2d(x, coefficients, bank, bias[:, :3], **kw)
    with pytest.raises(InputError, match="groups=3 does not divide"):
        kernel_mixture_conv2d(x, coefficients, bank, bias, groups=3)
    with pytest.raises(InputError, match="x must be a floating-point"):
        kernel_mixture_conv2d(x.long(), coefficients, bank, bias, **kw)
    with pytest.raises(InputError, match="x and coefficients: tensors must share device and dtype"):
        kernel_mixture_conv2d(x, coefficients.double(), bank, bias, **kw)
    names = MixtureNames("routing_weights", "experts", "K")
    with pytest.raises(InputError, match=r"routing_weights must have K=2 in shape \(B,K\)"):
        kernel_mixture_conv2d(x, coefficients[:, :1], bank, bias, **kw, names=names)
    with pytest.raises(InputError, match="x and experts: tensors must share"):
        kernel_mixture_conv2d_reference(x, coefficients, bank.double(), bias, **kw, names=names)


# 3. channels_last and non-contiguous inputs ---------------------------------------------------------


def test_channels_last_and_noncontiguous_inputs():
    x, filters, bias, kw = conv_inputs(CONV_CASES[1])
    expected = dynamic_conv2d_reference(x, filters, bias, **kw)
    torch.testing.assert_close(dynamic_conv2d(x.to(memory_format=torch.channels_last), filters, bias, **kw), expected)
    torch.testing.assert_close(dynamic_conv2d(x, filters.transpose(3, 4).contiguous().transpose(3, 4), bias, **kw),
                               expected)


# 4. exact answers -----------------------------------------------------------------------------------


def test_local_filter_hand_worked():
    x = torch.arange(9.0).view(1, 1, 3, 3)
    ones = torch.ones(1, 9, 3, 3)
    # 3x3 box sums with zero padding
    expected = torch.tensor([[8.0, 15.0, 12.0], [21.0, 36.0, 27.0], [20.0, 33.0, 24.0]]).view(1, 1, 3, 3)
    assert torch.equal(dynamic_local_filter(x, ones, 3), expected)
    # softmax of equal logits = box mean
    torch.testing.assert_close(dynamic_local_filter(x, ones, 3, softmax=True), expected / 9)
    # a one-hot tap (i=0, j=2) reads the up-right neighbour: out[y, x] = in[y-1, x+1]
    shift = torch.zeros(1, 9, 3, 3)
    shift[:, 2] = 1
    assert torch.equal(dynamic_local_filter(x, shift, 3), torch.tensor([[[[0.0, 0, 0], [1, 2, 0], [4, 5, 0]]]]))
    # per-position choice: left column centre tap, others zero
    centre = torch.zeros(1, 9, 3, 3)
    centre[:, 4, :, 0] = 2
    assert torch.equal(dynamic_local_filter(x, centre, 3)[0, 0, :, 0], torch.tensor([0.0, 6, 12]))


def test_dynamic_conv2d_scaled_identity_per_sample():
    x = torch.randn(3, 2, 4, 5)
    filters = torch.zeros(3, 2, 2, 1, 1)
    for b in range(3):
        filters[b, :, :, 0, 0] = (b + 1) * torch.eye(2)
    out = dynamic_conv2d(x, filters, torch.ones(3, 2))
    assert torch.equal(out, x * torch.tensor([1.0, 2, 3]).view(3, 1, 1, 1) + 1)


def test_module_static_bias():
    layer = DynamicConv2d(2, 3, 1, bias=True)
    assert torch.equal(layer.bias, torch.zeros(3))
    with torch.no_grad():
        layer.bias.fill_(0.5)
    x, f = torch.randn(2, 2, 3, 3), torch.randn(2, 3, 2, 1, 1)
    torch.testing.assert_close(layer(x, f), dynamic_conv2d_reference(x, f) + 0.5)
