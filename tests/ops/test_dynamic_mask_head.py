"""Tests for zoo.ops.dynamic_mask_head (CondInst dynamic mask head) particular to it. The shared operator
contract (both implementations and the module == their references on random shapes, gradcheck, meta
device, bfloat16, torch.compile) is tests/ops/test_contract.py over the "dynamic_mask_head" family of
tests/support/op_table.py."""
from __future__ import annotations

import pytest
import torch

from support.op_table import SOI, mask_head_inputs
from zoo.errors import InputError
from zoo.ops.dynamic_mask_head import (
    DynamicMaskHead,
    aligned_bilinear,
    compute_locations,
    dynamic_mask_head,
    dynamic_mask_head_reference,
    dynamic_params_counts,
    parse_dynamic_params,
    relative_coordinates,
)

# 1. shapes ------------------------------------------------------------------------------------------
def test_param_counts_and_parse_shapes():
    assert dynamic_params_counts() == ([80, 64, 8], [8, 8, 1])
    assert dynamic_params_counts(rel_coords=False) == ([64, 64, 8], [8, 8, 1])
    assert DynamicMaskHead().num_gen_params == 169
    weights, biases = parse_dynamic_params(torch.randn(6, 169), 8, [80, 64, 8], [8, 8, 1])
    assert [tuple(w.shape) for w in weights] == [(48, 10, 1, 1), (48, 8, 1, 1), (6, 8, 1, 1)]
    assert [tuple(b.shape) for b in biases] == [(48,), (48,), (6,)]


def test_module_shapes():
    head = DynamicMaskHead()
    assert head(*mask_head_inputs()[:1], 8, *mask_head_inputs()[1:]).shape == (5, 1, 20, 26)
    assert head(*mask_head_inputs()[:1], 4, *mask_head_inputs()[1:]).shape == (5, 1, 10, 13)
    assert head(*mask_head_inputs()[:1], 16, *mask_head_inputs()[1:]).shape == (5, 1, 40, 52)
    empty = head(mask_head_inputs()[0], 8, torch.zeros(0, 169), torch.zeros(0, dtype=torch.long), torch.zeros(0, 2),
                 torch.zeros(0, dtype=torch.long))
    assert empty.shape == (0, 1, 20, 26)
    assert dict(head.named_buffers())["sizes_of_interest"].tolist() == list(SOI)
    assert list(head.state_dict()) == ["sizes_of_interest"] and not list(head.parameters())


# 2. exceptions --------------------------------------------------------------------------------------
def test_exceptions():
    head = DynamicMaskHead()
    feats, params, im_inds, locs, levels = mask_head_inputs()
    with pytest.raises(InputError, match="P=169"):
        head(feats, 8, params[:, :168], im_inds, locs, levels)
    with pytest.raises(InputError, match="multiple of mask_out_stride"):
        head(feats, 6, params, im_inds, locs, levels)
    with pytest.raises(InputError, match="C=8"):
        head(feats[:, :7], 8, params, im_inds, locs, levels)
    with pytest.raises(InputError, match="instance_locations"):
        head(feats, 8, params, im_inds, locs[:4], levels)
    with pytest.raises(InputError, match="input channels"):
        dynamic_mask_head(torch.randn(5, 9, 4, 4), params, 8, [80, 64, 8], [8, 8, 1])
    with pytest.raises(InputError, match="impl"):
        dynamic_mask_head(torch.randn(5, 10, 4, 4), params, 8, [80, 64, 8], [8, 8, 1], "loop")
    with pytest.raises(InputError, match="P=169"):
        parse_dynamic_params(torch.randn(2, 170), 8, [80, 64, 8], [8, 8, 1])
    with pytest.raises(InputError, match="factor"):
        aligned_bilinear(torch.randn(1, 1, 3, 3), 1.5)


# 3. instances do not mix ----------------------------------------------------------------------------
def test_grouped_instances_do_not_mix():
    feats, params, im_inds, locs, levels = mask_head_inputs(n=6)
    head = DynamicMaskHead()
    full = head(feats, 8, params, im_inds, locs, levels)
    for i in (0, 3, 5):
        one = head(feats, 8, params[i:i + 1], im_inds[i:i + 1], locs[i:i + 1], levels[i:i + 1])
        torch.testing.assert_close(full[i:i + 1], one)


# 4. exact answers -----------------------------------------------------------------------------------
def test_locations_and_relative_coordinates():
    locs = compute_locations(2, 3, 8)
    assert locs.tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]
    rel = relative_coordinates(torch.tensor([[12.0, 4.0]]), locs, torch.tensor([64.0]))
    assert rel.shape == (1, 2, 6)
    assert (rel * 64).tolist() == [[[8, 0, -8, 8, 0, -8], [0, 0, 0, -8, -8, -8]]]


def test_aligned_bilinear_by_hand():
    x = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    expected = torch.tensor([[0.0, 0.0, 0.5, 1.0], [0.0, 0.0, 0.5, 1.0], [1.0, 1.0, 1.5, 2.0], [2.0, 2.0, 2.5, 3.0]])
    assert torch.equal(aligned_bilinear(x, 2)[0, 0], expected)
    y = torch.randn(2, 3, 5, 7)
    assert aligned_bilinear(y, 1) is y
    for f in (2, 4):  # input pixel i lands on output pixel i*f + f//2
        torch.testing.assert_close(aligned_bilinear(y, f)[..., f // 2::f, f // 2::f], y)


def test_tiny_fcn_by_hand():
    # two inputs (a, b); layer 1 = identity 2 -> 2, layer 2 = [1, -1] + 0.5  =>  relu(a) - relu(b) + 0.5
    params = torch.tensor([[1.0, 0.0, 0.0, 1.0, 1.0, -1.0, 0.0, 0.0, 0.5]])
    inputs = torch.tensor([[[[1.0, -2.0]], [[-3.0, 4.0]]]])  # a = (1, -2), b = (-3, 4)
    for impl in ("bmm", "grouped_conv"):
        assert dynamic_mask_head(inputs, params, 2, [4, 2], [2, 1], impl).tolist() == [[[[1.5, -3.5]]]]
    assert dynamic_mask_head_reference(inputs, params, 2, [4, 2], [2, 1]).tolist() == [[[[1.5, -3.5]]]]
