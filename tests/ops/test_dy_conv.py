"""Tests of zoo.ops.dy_conv (Dynamic Convolution, Chen et al. 2020) particular to it. The shared operator
contract (dy_conv2d and DyConv2d == dy_conv2d_reference on random shapes, gradcheck of the op and through
the attention, meta device, bfloat16, torch.compile and torch.export) is tests/ops/test_contract.py over
the "dy_conv" family of tests/support/op_table.py."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import InputError
from zoo.ops.dy_conv import DyConv2d, dy_conv2d, set_temperature, temperature_schedule

# (B, C, out, H, W, k, stride, padding, dilation, groups, K, temperature)
CASES = [
    (1, 3, 5, 7, 7, (3, 3), 1, 1, 1, 1, 4, 1.0),
    (3, 4, 6, 9, 6, (3, 1), 2, (1, 0), 1, 2, 3, 30.0),
    (2, 6, 3, 11, 8, (3, 3), 1, 2, 2, 3, 4, 0.5),
    (4, 4, 4, 5, 13, (1, 1), 1, 0, 1, 4, 1, 1.0),
]


def _inputs(case, dtype=torch.float32):
    b, c, out, h, w, k, stride, padding, dilation, groups, kk, tau = case
    x = torch.randn(b, c, h, w, dtype=dtype)
    logits = 3 * torch.randn(b, kk, dtype=dtype)
    weight = torch.randn(kk, out, c // groups, *k, dtype=dtype)
    bias = torch.randn(kk, out, dtype=dtype)
    return x, logits, weight, bias, dict(temperature=tau, stride=stride, padding=padding, dilation=dilation,
                                         groups=groups)


# 1. shapes ------------------------------------------------------------------------------------------


def test_shapes_and_hidden_width():
    layer = DyConv2d(32, 16, 3, stride=2, padding=1, groups=4)
    assert layer.weight.shape == (4, 16, 8, 3, 3) and layer.bias.shape == (4, 16)
    assert layer.attention.fc1.out_features == 8 and layer.attention.fc2.out_features == 4  # C/4
    assert DyConv2d(3, 8).attention.fc1.out_features == 4  # min_hidden for a thin stem
    assert DyConv2d(64, 8, reduction=8, min_hidden=2, num_kernels=6).attention.fc2.out_features == 6
    assert layer(torch.randn(3, 32, 9, 10)).shape == (3, 16, 5, 5)
    assert layer.attention_logits(torch.randn(3, 32, 9, 10)).shape == (3, 4)


# 2. exceptions --------------------------------------------------------------------------------------


def test_errors():
    x, logits, weight, bias, kw = _inputs(CASES[1])
    with pytest.raises(InputError, match="attention_logits must have K=3"):
        dy_conv2d(x, logits[:, :2], weight, bias, **kw)
    with pytest.raises(InputError, match="bias must have"):
        dy_conv2d(x, logits, weight, bias[:2], **kw)
    with pytest.raises(InputError, match="temperature must be > 0"):
        dy_conv2d(x, logits, weight, bias, **{**kw, "temperature": 0.0})
    with pytest.raises(InputError, match="x must have C=4"):
        DyConv2d(4, 4)(torch.randn(2, 3, 5, 5))
    with pytest.raises(ValueError):
        DyConv2d(4, 4).set_temperature(-1.0)
    with pytest.raises(ValueError):
        DyConv2d(4, 4, groups=3)


# 4. exact answers -----------------------------------------------------------------------------------


def test_equal_kernels_is_plain_conv():
    layer = DyConv2d(4, 6, 3, padding=2, dilation=2, groups=2, num_kernels=4)
    conv = nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2)
    with torch.no_grad():
        layer.weight.copy_(conv.weight.expand_as(layer.weight))
        layer.bias.copy_(conv.bias.expand_as(layer.bias))
    x = torch.randn(3, 4, 7, 9)
    torch.testing.assert_close(layer(x), conv(x))  # whatever the attention: pi sums to 1


def test_temperature_controls_attention_sharpness():
    x, logits, weight, bias, kw = _inputs(CASES[0])
    kw.pop("temperature")
    uniform = F.conv2d(x, weight.mean(0), bias.mean(0), stride=kw["stride"], padding=kw["padding"])
    torch.testing.assert_close(dy_conv2d(x, logits, weight, bias, 1e6, **kw), uniform, atol=1e-4, rtol=1e-4)
    top = int(logits[0].argmax())
    hard = F.conv2d(x, weight[top], bias[top], stride=kw["stride"], padding=kw["padding"])
    torch.testing.assert_close(dy_conv2d(x, logits, weight, bias, 1e-4, **kw), hard)


def test_temperature_schedule_and_setter():
    assert temperature_schedule(0) == 30.0
    assert temperature_schedule(5) == pytest.approx(15.5)
    assert temperature_schedule(2.5) == pytest.approx(22.75)
    assert temperature_schedule(10) == 1.0 and temperature_schedule(90) == 1.0
    assert temperature_schedule(3, start=10.0, end=2.0, anneal_epochs=4) == pytest.approx(4.0)
    model = nn.Sequential(DyConv2d(3, 4, 3), nn.ReLU(), nn.Sequential(DyConv2d(4, 4, 1), nn.Conv2d(4, 4, 1)))
    assert set_temperature(model, temperature_schedule(0)) == 2
    assert model[0].temperature == 30.0 and model[2][0].temperature == 30.0
