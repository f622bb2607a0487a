"""Tests of zoo.ops.dy_conv (Dynamic Convolution, Chen et al. 2020)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import InputError
from zoo.ops.dy_conv import DyConv2d, dy_conv2d, dy_conv2d_reference, set_temperature, temperature_schedule

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


# 3. fast == reference -------------------------------------------------------------------------------


# dy_conv2d == dy_conv2d_reference on random inputs (float32/64, with and without bias) is the shared
# parametrised tests/ops/test_dynamic_filter.py::test_kernel_mixture_matches_reference.


def test_module_matches_reference():
    layer = DyConv2d(6, 4, (3, 5), stride=(1, 2), padding=(1, 2), dilation=1, groups=2, temperature=5.0)
    x = torch.randn(3, 6, 8, 9)
    expected = dy_conv2d_reference(x, layer.attention_logits(x), layer.weight, layer.bias, 5.0, (1, 2), (1, 2), 1, 2)
    torch.testing.assert_close(layer(x), expected)


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


# 5. gradcheck ---------------------------------------------------------------------------------------


def test_gradcheck_through_attention():
    # the functional op alone: tests/ops/test_dynamic_filter.py::test_kernel_mixture_gradcheck
    layer = DyConv2d(2, 2, 3, stride=(1, 2), padding=1, groups=2, num_kernels=3, temperature=2.0).double()
    x = torch.randn(2, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,), fast_mode=True)


# 6. meta device -------------------------------------------------------------------------------------


def test_meta_device():
    with torch.device("meta"):
        layer = DyConv2d(8, 6, 3, padding=1)
        out = layer(torch.randn(2, 8, 7, 8))
    assert layer.weight.device.type == "meta" and out.shape == (2, 6, 7, 8)


# 7. bfloat16 ----------------------------------------------------------------------------------------


def test_bfloat16_forward():
    layer = DyConv2d(8, 6, 3, padding=1)
    x = torch.randn(2, 8, 7, 8)
    expected = layer(x)
    out = layer.bfloat16()(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, atol=0.1, rtol=0.05)


# 8. torch.compile -----------------------------------------------------------------------------------


def test_compile():
    layer = DyConv2d(4, 6, 3, padding=1, groups=2, temperature=30.0)
    x = torch.randn(2, 4, 7, 8)
    torch.testing.assert_close(torch.compile(layer, backend="eager", fullgraph=True)(x), layer(x))


def test_export():
    layer = DyConv2d(4, 6, 3, padding=1, groups=2)
    x = torch.randn(2, 4, 7, 8)
    program = torch.export.export(layer, (x,))
    torch.testing.assert_close(program.module()(x), layer(x))


@pytest.mark.slow
def test_compile_inductor():  # ~35 s of C++ compilation on 2 cores
    layer = DyConv2d(4, 6, 3, padding=1, groups=2)
    x = torch.randn(2, 4, 7, 8)
    torch.testing.assert_close(torch.compile(layer)(x), layer(x))
