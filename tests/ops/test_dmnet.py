"""Tests for zoo.ops.dmnet (DMNet Dynamic Convolutional Module) particular to it. The shared operator
contract (functional and module == reference on random shapes, gradcheck, meta device, bfloat16,
torch.compile) is tests/ops/test_contract.py over the "dmnet" family of tests/support/op_table.py."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zoo.errors import InputError
from zoo.ops.dmnet import DynamicConvModule, dynamic_depthwise_conv2d, same_padding

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
