"""Tests of zoo.ops.cond_conv (CondConv, Yang et al. 2019) particular to it. The shared operator contract
(cond_conv2d == cond_conv2d_reference on random shapes, gradcheck of the op and through the routing, meta
device, bfloat16, torch.compile) is tests/ops/test_contract.py over the "cond_conv" family of
tests/support/op_table.py."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zoo.errors import InputError
from zoo.ops.cond_conv import CondConv2d, CondConvRouting, cond_conv2d


# 1. shapes ------------------------------------------------------------------------------------------


def test_shapes_and_timm_layout():
    layer = CondConv2d(8, 6, 3, stride=2, padding=1, groups=2, bias=True, num_experts=5)
    assert layer.weight.shape == (5, 6 * 4 * 3 * 3) and layer.bias.shape == (5, 6)
    assert layer.expert_weight().shape == (5, 6, 4, 3, 3)
    routing = CondConvRouting(8, 5)
    x = torch.randn(3, 8, 9, 10)
    r = routing(x)
    assert r.shape == (3, 5) and bool(((r > 0) & (r < 1)).all())
    assert layer(x, r).shape == (3, 6, 5, 5)
    assert CondConv2d(8, 6).bias is None  # timm default: no bias


# 2. exceptions --------------------------------------------------------------------------------------


def test_errors():
    x, routing = torch.randn(3, 4, 9, 6), torch.rand(3, 3)  # E=3 experts, groups=2
    weight, bias, kw = torch.randn(3, 6, 2, 3, 1), torch.randn(3, 6), dict(stride=2, padding=(1, 0), groups=2)
    with pytest.raises(InputError, match="routing_weights must have E=3"):
        cond_conv2d(x, routing[:, :2], weight, bias, **kw)
    with pytest.raises(InputError, match="routing_weights must have B=3"):
        cond_conv2d(x, routing[:2], weight, bias, **kw)
    with pytest.raises(InputError, match="bias must have"):
        cond_conv2d(x, routing, weight, bias[:, :2], **kw)
    with pytest.raises(InputError, match="weight must have shape"):
        cond_conv2d(x, routing, weight[0], bias, **kw)
    with pytest.raises(InputError, match="share device and dtype"):
        cond_conv2d(x, routing.double(), weight, bias, **kw)
    with pytest.raises(InputError, match="x must have C=8"):
        CondConv2d(8, 4)(torch.randn(2, 4, 5, 5), torch.rand(2, 4))
    with pytest.raises(InputError, match="x must have C=8"):
        CondConvRouting(8)(torch.randn(2, 4, 5, 5))
    with pytest.raises(ValueError):
        CondConvRouting(8, dropout=1.0)


# 3. equals timm's CondConv2d ------------------------------------------------------------------------


@pytest.mark.parametrize("groups,bias", [(1, False), (2, True)])
def test_equals_timm(groups, bias):
    timm_layers = pytest.importorskip("timm.layers")
    torch.manual_seed(0)
    theirs = timm_layers.CondConv2d(4, 6, 3, stride=2, padding=1, dilation=1, groups=groups, bias=bias, num_experts=3)
    ours = CondConv2d(4, 6, 3, stride=2, padding=1, groups=groups, bias=bias, num_experts=3)
    ours.load_state_dict(theirs.state_dict())  # same keys and layout
    x, r = torch.randn(3, 4, 9, 8), torch.rand(3, 3)
    torch.testing.assert_close(ours(x, r), theirs(x, r))


# 4. exact answers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("expert", [0, 2])
def test_one_hot_routing_is_plain_conv(expert):
    layer = CondConv2d(4, 6, 3, padding=1, dilation=1, groups=2, bias=True, num_experts=3)
    x = torch.randn(2, 4, 7, 5)
    r = F.one_hot(torch.tensor([expert, expert]), 3).float()
    expected = F.conv2d(x, layer.expert_weight()[expert], layer.bias[expert], padding=1, groups=2)
    torch.testing.assert_close(layer(x, r), expected)


def test_routing_is_sigmoid_of_linear_of_mean():
    routing = CondConvRouting(3, 2)
    with torch.no_grad():
        routing.fc.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 0, -2]]))
        routing.fc.bias.zero_()
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0] = torch.tensor([[1.0, 3], [0, 0]])  # mean 1
    x[0, 2] = 0.5
    torch.testing.assert_close(routing(x), torch.sigmoid(torch.tensor([[1.0, -1.0]])))


def test_routing_dropout_only_in_training():
    routing = CondConvRouting(16, 4, dropout=0.5)
    x = torch.randn(8, 16, 3, 3)
    routing.eval()
    expected = torch.sigmoid(routing.fc(x.mean(dim=(2, 3))))
    torch.testing.assert_close(routing(x), expected)
    routing.train()
    torch.manual_seed(0)
    assert not torch.allclose(routing(x), expected)
