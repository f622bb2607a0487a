"""Tests for zoo.ops.dynamic_mask_head (CondInst dynamic mask head)."""
from __future__ import annotations

import pytest
import torch

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

TOL = {torch.float32: dict(atol=1e-5, rtol=1e-4), torch.float64: dict(atol=1e-12, rtol=1e-10)}
SOI = (64, 128, 256, 512, 1024)


def _inputs(n=5, b=2, c=8, h=10, w=13, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask_feats = torch.randn(b, c, h, w, generator=g, dtype=dtype)
    params = torch.randn(n, 169, generator=g, dtype=dtype) * 0.5
    im_inds = torch.randint(0, b, (n,), generator=g)
    locs = torch.rand(n, 2, generator=g, dtype=dtype) * 8 * torch.tensor([w, h], dtype=dtype)
    levels = torch.randint(0, 5, (n,), generator=g)
    return mask_feats, params, im_inds, locs, levels


def _head_reference(mask_feats, stride, params, im_inds, locs, levels):
    """CondInst's forward with per-pixel loops for the relative coordinates and the reference FCN."""
    n, (_, c, h, w) = params.shape[0], mask_feats.shape
    inputs = torch.empty(n, c + 2, h, w, dtype=mask_feats.dtype)
    for i in range(n):
        soi = SOI[int(levels[i])]
        for y in range(h):
            for x in range(w):
                inputs[i, 0, y, x] = (locs[i, 0] - (x * stride + stride // 2)) / soi
                inputs[i, 1, y, x] = (locs[i, 1] - (y * stride + stride // 2)) / soi
        inputs[i, 2:] = mask_feats[int(im_inds[i])]
    logits = dynamic_mask_head_reference(inputs, params, 8, [80, 64, 8], [8, 8, 1])
    return aligned_bilinear(logits, stride // 4)


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
    assert head(*_inputs()[:1], 8, *_inputs()[1:]).shape == (5, 1, 20, 26)
    assert head(*_inputs()[:1], 4, *_inputs()[1:]).shape == (5, 1, 10, 13)
    assert head(*_inputs()[:1], 16, *_inputs()[1:]).shape == (5, 1, 40, 52)
    empty = head(_inputs()[0], 8, torch.zeros(0, 169), torch.zeros(0, dtype=torch.long), torch.zeros(0, 2),
                 torch.zeros(0, dtype=torch.long))
    assert empty.shape == (0, 1, 20, 26)
    assert dict(head.named_buffers())["sizes_of_interest"].tolist() == list(SOI)
    assert list(head.state_dict()) == ["sizes_of_interest"] and not list(head.parameters())


# 2. exceptions --------------------------------------------------------------------------------------
def test_exceptions():
    head = DynamicMaskHead()
    feats, params, im_inds, locs, levels = _inputs()
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


# 3. fast == reference -------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["bmm", "grouped_conv"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,h,w", [(1, 5, 5), (7, 9, 6), (3, 4, 11)])
def test_functional_fast_matches_reference(impl, dtype, n, h, w):
    g = torch.Generator().manual_seed(n)
    inputs = torch.randn(n, 10, h, w, generator=g, dtype=dtype)
    params = torch.randn(n, 169, generator=g, dtype=dtype)
    torch.testing.assert_close(dynamic_mask_head(inputs, params, 8, [80, 64, 8], [8, 8, 1], impl),
                               dynamic_mask_head_reference(inputs, params, 8, [80, 64, 8], [8, 8, 1]), **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("stride,shape", [(8, (2, 7, 9)), (4, (3, 5, 6)), (16, (1, 6, 5))])
def test_module_matches_reference(dtype, stride, shape):
    b, h, w = shape
    feats, params, im_inds, locs, levels = _inputs(n=6, b=b, h=h, w=w, dtype=dtype)
    out = DynamicMaskHead(dtype=dtype)(feats, stride, params, im_inds, locs, levels)
    torch.testing.assert_close(out, _head_reference(feats, stride, params, im_inds, locs, levels), **TOL[dtype])


def test_grouped_instances_do_not_mix():
    feats, params, im_inds, locs, levels = _inputs(n=6)
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


# 5. gradcheck ---------------------------------------------------------------------------------------
def test_gradcheck():
    nums = dynamic_params_counts(in_channels=2, channels=3)  # 4 -> 3 -> 3 -> 1: (12, 9, 3), (3, 3, 1)
    inputs = torch.randn(2, 4, 2, 3, dtype=torch.float64, requires_grad=True)
    params = torch.randn(2, sum(nums[0]) + sum(nums[1]), dtype=torch.float64, requires_grad=True)
    for impl in ("bmm", "grouped_conv"):
        assert torch.autograd.gradcheck(lambda i, p: dynamic_mask_head(i, p, 3, *nums, impl), (inputs, params))
    x = torch.randn(2, 1, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: aligned_bilinear(t, 2), (x,))


# 6. meta device -------------------------------------------------------------------------------------
def test_meta_device():
    with torch.device("meta"):
        head = DynamicMaskHead()
        out = head(torch.empty(2, 8, 10, 12), 8, torch.empty(4, 169), torch.zeros(4, dtype=torch.long),
                   torch.empty(4, 2), torch.zeros(4, dtype=torch.long))
    assert out.device.type == "meta" and out.shape == (4, 1, 20, 24)


# 7. bfloat16 ----------------------------------------------------------------------------------------
def test_bfloat16_forward():
    feats, params, im_inds, locs, levels = _inputs()
    head = DynamicMaskHead()
    expected = head(feats, 8, params, im_inds, locs, levels)
    out = head(feats.bfloat16(), 8, params.bfloat16(), im_inds, locs.bfloat16(), levels)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), expected, atol=0.05 * expected.abs().max().item(), rtol=0.05)


# 8. torch.compile -----------------------------------------------------------------------------------
def test_compile():
    head = DynamicMaskHead()
    feats, params, im_inds, locs, levels = _inputs()
    compiled = torch.compile(head, backend="aot_eager", fullgraph=True)
    args = (feats, 8, params, im_inds, locs, levels)
    torch.testing.assert_close(compiled(*args), head(*args))
