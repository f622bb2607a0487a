"""Tests for zoo.ops.context_module (Yu & Koltun context module) particular to it. The shared operator
contract (fast == reference on random shapes, gradcheck, meta device, bfloat16, torch.export) is
tests/ops/test_contract.py over the "context_module" family of tests/support/op_table.py."""
from __future__ import annotations

import pytest
import torch

from support.op_table import randomise_context_module
from zoo.errors import InputError
from zoo.ops.context_module import CONTEXT_DILATIONS, ContextModule, context_module

CAFFE_NAMES = ["ctx_conv1_1", "ctx_conv1_2", "ctx_conv2_1", "ctx_conv3_1", "ctx_conv4_1", "ctx_conv5_1",
               "ctx_fc1", "ctx_final"]


# 1. shapes ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant,widths", [("basic", (3,) * 8), ("large", (6, 6, 12, 24, 48, 96, 96, 3))])
def test_shapes_and_names(variant, widths):
    m = ContextModule(3, variant)
    assert m(torch.rand(2, 3, 7, 10)).shape == (2, 3, 7, 10)
    assert m.widths == widths
    convs = m.layers()
    assert [n.split(".")[0] for n, _ in m.named_parameters()][::2] == CAFFE_NAMES
    assert [c.dilation[0] for c in convs] == list(CONTEXT_DILATIONS) == [1, 1, 2, 4, 8, 16, 1, 1]
    assert [c.kernel_size[0] for c in convs] == [3] * 7 + [1]
    assert all(c.padding[0] == c.dilation[0] * (c.kernel_size[0] // 2) for c in convs)


# 2. exceptions --------------------------------------------------------------------------------------
def test_exceptions():
    m = ContextModule(3)
    with pytest.raises(InputError, match="C=3"):
        m(torch.rand(1, 4, 8, 8))
    with pytest.raises(InputError, match="unsqueeze"):
        m(torch.rand(3, 8, 8))
    with pytest.raises(InputError, match="floating"):
        context_module(torch.ones(1, 3, 4, 4, dtype=torch.long), [c.weight for c in m.layers()],
                       [c.bias for c in m.layers()])
    with pytest.raises(InputError, match="one of each"):
        context_module(torch.rand(1, 3, 4, 4), [m.ctx_conv1_1.weight], [])
    with pytest.raises(ValueError, match="variant"):
        ContextModule(3, "huge")


# 4. exact answers -----------------------------------------------------------------------------------
def test_basic_identity_init_is_exact_identity():
    m = ContextModule(5)
    x = torch.rand(2, 5, 13, 9)
    assert torch.equal(m(x), x)
    # negative input: the first ReLU clips it, the identity layers carry relu(x) through
    y = torch.randn(2, 5, 13, 9)
    assert torch.equal(m(y), y.clamp_min(0))


def test_large_identity_init_splits_channels_and_sums_back():
    c = 3
    m = ContextModule(c, "large", init_noise=0.0)
    x = torch.rand(2, c, 8, 11)
    torch.testing.assert_close(m(x), x, atol=1e-6, rtol=1e-6)
    # every channel of layer i in group g = floor(a C / c_i) holds x_g * C / c_i (run the first i layers)
    w, b = [conv.weight for conv in m.layers()], [conv.bias for conv in m.layers()]
    for n_layers in (1, 3, 7):
        width = m.widths[n_layers - 1]
        out = context_module(x, w[:n_layers], b[:n_layers], CONTEXT_DILATIONS[:n_layers])
        groups = torch.arange(width) * c // width
        torch.testing.assert_close(out, x[:, groups] * c / width, atol=1e-6, rtol=1e-6)


def test_large_default_init_is_identity_up_to_noise():
    torch.manual_seed(0)
    m = ContextModule(4, "large")
    x = torch.rand(1, 4, 10, 10)
    err = (m(x) - x).abs().max()
    assert 0 < err < 0.1
    w = m.ctx_conv1_2.weight  # 8 -> 8: exact C/c_{i+1} = 0.5 on the group-matching centre taps, noise elsewhere
    assert torch.equal(w[0, 0, 1, 1], torch.tensor(0.5)) and torch.equal(w[0, 1, 1, 1], torch.tensor(0.5))
    assert 0 < w[0, 2, 1, 1].abs() < 0.01 and 0 < w[0, 0, 0, 0].abs() < 0.01


def test_receptive_field_is_67():
    m = randomise_context_module(ContextModule(1, dtype=torch.float64))
    with torch.no_grad():  # positive weights so no path is cancelled or clipped
        for conv in m.layers():
            conv.weight.abs_()
            conv.bias.fill_(0.1)
    x = torch.rand(1, 1, 71, 71, dtype=torch.float64, requires_grad=True)
    m(x)[0, 0, 35, 35].backward()
    rows = x.grad[0, 0].abs().sum(1).nonzero().flatten()
    cols = x.grad[0, 0].abs().sum(0).nonzero().flatten()
    assert (rows.min().item(), rows.max().item()) == (2, 68) and (cols.min().item(), cols.max().item()) == (2, 68)
