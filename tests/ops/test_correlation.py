"""Tests of zoo.ops.correlation (FlowNetC cost volume) particular to it. The shared operator contract
(fast == reference on random shapes and at the FlowNetC setting, gradcheck, meta device, bfloat16,
torch.export and torch.compile) is tests/ops/test_contract.py over the "correlation" family of
tests/support/op_table.py."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from support.op_table import feature_pair
from zoo.errors import InputError
from zoo.ops.correlation import Correlation, correlation, correlation_reference

HAS_SCS = importlib.util.find_spec("spatial_correlation_sampler") is not None
needs_scs = pytest.mark.skipif(not HAS_SCS, reason="spatial_correlation_sampler is not installed")


def _scs(f1, f2, max_displacement, stride, kernel_size=1):
    """ClementPinard/FlowNetPytorch's `correlate` (without its LeakyReLU), kernel window k*k*C-normalised."""
    from spatial_correlation_sampler import spatial_correlation_sample

    r = max_displacement // stride
    out = spatial_correlation_sample(f1, f2, kernel_size=kernel_size, patch_size=2 * r + 1, stride=1,
                                     padding=kernel_size // 2, dilation_patch=stride)
    b, ph, pw, h, w = out.shape
    return out.view(b, ph * pw, h, w) / (kernel_size * kernel_size * f1.size(1))


# 1. shapes ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("md,stride,channels", [(20, 2, 441), (4, 1, 81), (3, 2, 9), (0, 1, 1), (1, 3, 1)])
def test_shapes(md, stride, channels):
    f1, f2 = feature_pair((2, 3, 5, 7))
    assert correlation(f1, f2, md, stride).shape == (2, channels, 5, 7)
    module = Correlation(md, stride)
    assert module.out_channels == channels
    assert module(f1, f2).shape == (2, channels, 5, 7)


def test_module_defaults_are_flownetc():
    module = Correlation()
    assert module.out_channels == 441
    assert "max_displacement=20, stride=2, kernel_size=1, normalize=True" in repr(module)
    assert list(module.parameters()) == []


def test_empty_inputs():
    assert correlation(torch.zeros(0, 3, 4, 5), torch.zeros(0, 3, 4, 5), 2, 1).shape == (0, 25, 4, 5)
    assert correlation(torch.zeros(1, 3, 4, 0), torch.zeros(1, 3, 4, 0), 2, 1).shape == (1, 25, 4, 0)


# 2. exceptions --------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [correlation, correlation_reference])
def test_bad_inputs(fn):
    f1, f2 = feature_pair((1, 2, 4, 4))
    with pytest.raises(InputError, match="f1 must have shape"):
        fn(f1[0], f2)
    with pytest.raises(InputError, match="f2 must have W=4"):
        fn(f1, f2[..., :3])
    with pytest.raises(InputError, match="floating-point"):
        fn(f1.long(), f2.long())
    with pytest.raises(InputError, match="share device and dtype"):
        fn(f1, f2.double())
    with pytest.raises(InputError, match="at least one channel"):
        fn(f1[:, :0], f2[:, :0])


@pytest.mark.parametrize("kwargs,match", [
    ({"kernel_size": 2}, "kernel_size must be odd"),
    ({"kernel_size": 0}, "kernel_size must be an int >= 1"),
    ({"stride": 0}, "stride must be an int >= 1"),
    ({"max_displacement": -1}, "max_displacement must be an int >= 0"),
    ({"max_displacement": 2.0}, "max_displacement must be an int"),
])
def test_bad_arguments(kwargs, match):
    f1, f2 = feature_pair((1, 2, 4, 4))
    with pytest.raises(ValueError, match=match):
        correlation(f1, f2, **kwargs)
    with pytest.raises(ValueError, match=match):
        Correlation(**kwargs)


# 3. non-contiguous inputs, spatial-correlation-sampler ----------------------------------------------
def test_non_contiguous_inputs():
    f1, f2 = feature_pair((2, 6, 7, 9))
    cl1, cl2 = f1.to(memory_format=torch.channels_last), f2.to(memory_format=torch.channels_last)
    torch.testing.assert_close(correlation(cl1, cl2, 3, 1), correlation_reference(f1, f2, 3, 1))
    s1, s2 = f1[:, ::2, :, 1:], f2[:, 1::2, :, :-1]
    torch.testing.assert_close(correlation(s1, s2, 4, 2), correlation_reference(s1, s2, 4, 2))


@needs_scs
@pytest.mark.parametrize("shape,md,stride,kernel_size", [
    ((1, 32, 24, 32), 20, 2, 1),   # FlowNetC: patch_size=21, dilation_patch=2
    ((2, 8, 9, 11), 4, 2, 1),
    ((2, 8, 9, 11), 3, 1, 1),
    ((1, 5, 7, 13), 6, 3, 1),
    ((2, 4, 6, 7), 4, 2, 3),
])
def test_equals_spatial_correlation_sampler(shape, md, stride, kernel_size):
    f1, f2 = feature_pair(shape)
    torch.testing.assert_close(correlation(f1, f2, md, stride, kernel_size),
                               _scs(f1, f2, md, stride, kernel_size), rtol=1e-5, atol=1e-6)


@needs_scs
@pytest.mark.filterwarnings("ignore:'saved_variables' is deprecated:DeprecationWarning")
def test_gradients_equal_spatial_correlation_sampler():
    f1, f2 = feature_pair((2, 4, 6, 7), torch.float64)
    w = torch.randn(2, 25, 6, 7, dtype=torch.float64)
    grads = []
    for fn in (correlation, _scs):
        a, b = f1.clone().requires_grad_(), f2.clone().requires_grad_()
        (fn(a, b, 4, 2) * w).sum().backward()
        grads.append((a.grad, b.grad))
    torch.testing.assert_close(grads[0], grads[1])


# 4. hand-worked answers -----------------------------------------------------------------------------
def test_hand_worked_horizontal():
    # One row [1, 2, 3] against [4, 5, 6], displacements -1..1: only dy = 0 (channels 3..5) is inside.
    f1 = torch.tensor([1.0, 2.0, 3.0]).view(1, 1, 1, 3)
    f2 = torch.tensor([4.0, 5.0, 6.0]).view(1, 1, 1, 3)
    want = torch.zeros(1, 9, 1, 3)
    want[0, 3, 0] = torch.tensor([0.0, 8.0, 15.0])                            # dx=-1: f1[x] * f2[x-1]
    want[0, 4, 0] = torch.tensor([4.0, 10.0, 18.0])                           # dx=0
    want[0, 5, 0] = torch.tensor([5.0, 12.0, 0.0])                            # dx=+1: f1[x] * f2[x+1]
    for fn in (correlation, correlation_reference):
        torch.testing.assert_close(fn(f1, f2, 1, 1), want)


def test_hand_worked_dy_is_outer_and_divided_by_c():
    # A column [1, 2] against [3, 5] in two identical channels: only dx = 0 (j = 1) is inside, so the
    # non-zero channels are i * 3 + 1 for dy = -1, 0, 1; the channel sum 2 * product is divided by C = 2.
    f1 = torch.tensor([1.0, 2.0]).view(1, 1, 2, 1).repeat(1, 2, 1, 1)
    f2 = torch.tensor([3.0, 5.0]).view(1, 1, 2, 1).repeat(1, 2, 1, 1)
    want = torch.zeros(1, 9, 2, 1)
    want[0, 1, :, 0] = torch.tensor([0.0, 6.0])    # dy=-1: f1[y] * f2[y-1]
    want[0, 4, :, 0] = torch.tensor([3.0, 10.0])   # dy=0
    want[0, 7, :, 0] = torch.tensor([5.0, 0.0])    # dy=+1
    for fn in (correlation, correlation_reference):
        torch.testing.assert_close(fn(f1, f2, 1, 1), want)
        torch.testing.assert_close(fn(f1, f2, 1, 1, normalize=False), 2 * want)


def test_hand_worked_stride_and_kernel():
    # Stride 2, max displacement 3 -> displacements -2, 0, 2 (r = 1); x = 0 sees f2[x + 2] only.
    f1 = torch.tensor([1.0, 0.0, 0.0]).view(1, 1, 1, 3)
    f2 = torch.tensor([0.0, 0.0, 7.0]).view(1, 1, 1, 3)
    out = correlation(f1, f2, 3, 2)
    assert out.shape == (1, 9, 1, 3)
    assert out[0, 5, 0, 0] == 7.0 and out.abs().sum() == 7.0
    # 3x3 windows of ones on a 3x3 map, no displacement: count of window cells inside, divided by 9.
    ones = torch.ones(1, 1, 3, 3)
    counts = torch.tensor([[4.0, 6.0, 4.0], [6.0, 9.0, 6.0], [4.0, 6.0, 4.0]]).view(1, 1, 3, 3)
    for fn in (correlation, correlation_reference):
        torch.testing.assert_close(fn(ones, ones, 0, 1, 3), counts / 9)
        torch.testing.assert_close(fn(ones, ones, 0, 1, 3, normalize=False), counts)
