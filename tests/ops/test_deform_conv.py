"""Tests for zoo.ops.deform_conv (Deformable ConvNets v1 / v2) particular to it. The shared operator
contract (fast == reference on random shapes, fast gradients == reference gradients, gradcheck, meta
device, bfloat16, torch.export and torch.compile) is tests/ops/test_contract.py over the "deform_conv"
family of tests/support/op_table.py."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from support.op_table import DEFORM_CONV_CONFIGS, deform_conv_inputs
from zoo.errors import InputError
from zoo.ops.deform_conv import (
    DeformConv2d,
    ModulatedDeformConv2d,
    deform_conv2d,
    deform_conv2d_reference,
    modulated_deform_conv2d,
)


# 1. shapes -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls,parts", [(DeformConv2d, 2), (ModulatedDeformConv2d, 3)])
def test_module_shapes_and_offset_conv(cls, parts):
    m = cls(8, 6, 3, stride=2, padding=2, dilation=2, groups=2, deform_groups=4)
    assert m.conv_offset.out_channels == parts * 4 * 9
    assert m.conv_offset.kernel_size == (3, 3) and m.conv_offset.stride == (2, 2)
    assert m.conv_offset.padding == (2, 2) and m.conv_offset.dilation == (2, 2)
    assert torch.count_nonzero(m.conv_offset.weight) == 0 and torch.count_nonzero(m.conv_offset.bias) == 0
    assert m.weight.shape == (6, 4, 3, 3)
    y = m(torch.randn(2, 8, 9, 7))
    assert y.shape == (2, 6, 5, 4)


def test_state_dict_keys_match_mmcv_packs():
    # mmcv DeformConv2dPack: weight only (bias=False) + conv_offset; ModulatedDeformConv2dPack: bias=True default.
    assert set(DeformConv2d(4, 4, 3, padding=1).state_dict()) == {"weight", "conv_offset.weight", "conv_offset.bias"}
    assert set(ModulatedDeformConv2d(4, 4, 3, padding=1).state_dict()) == {
        "weight", "bias", "conv_offset.weight", "conv_offset.bias"}
    assert set(ModulatedDeformConv2d(4, 4, 3, padding=1, bias=False).state_dict()) == {
        "weight", "conv_offset.weight", "conv_offset.bias"}


def test_functional_shapes_and_empty_batch():
    x, off, mask, w, b, (s, p, d) = deform_conv_inputs(2, 4, 7, 5, 6, s=2)
    assert deform_conv2d(x, off, w, b, s, p, d).shape == (2, 6, 4, 3)
    assert modulated_deform_conv2d(x, off, mask, w, b, s, p, d).shape == (2, 6, 4, 3)
    assert deform_conv2d(x[:0], off[:0], w, b, s, p, d).shape == (0, 6, 4, 3)


# 2. exceptions ---------------------------------------------------------------------------------------------
def test_errors():
    x, off, mask, w, b, (s, p, d) = deform_conv_inputs(1, 4, 6, 6, 4)
    with pytest.raises(InputError, match="offset must have 2 \\* deform_groups"):
        deform_conv2d(x, off[:, :17], w, b, s, p, d)
    with pytest.raises(InputError, match="offset must have shape"):
        deform_conv2d(x, off[..., :-1], w, b, s, p, d)
    with pytest.raises(InputError, match="mask"):
        modulated_deform_conv2d(x, off, mask[:, :8], w, b, s, p, d)
    with pytest.raises(InputError, match="deform_groups=3"):  # 54 offset channels -> 3 groups, 4 % 3 != 0
        deform_conv2d(x, torch.zeros(1, 54, 6, 6), w, b, s, p, d)
    with pytest.raises(InputError, match="divide"):
        deform_conv2d(x, off, torch.randn(4, 3, 3, 3), b, s, p, d)
    with pytest.raises(InputError, match="bias"):
        deform_conv2d(x, off, w, b[:3], s, p, d)
    with pytest.raises(InputError, match="too small"):
        deform_conv2d(x[..., :1, :1], off, w, None, 1, 0, 1)
    with pytest.raises(InputError, match="B,C_in,H,W"):
        deform_conv2d(x[0], off, w)
    with pytest.raises(InputError, match="floating"):
        deform_conv2d(x.long(), off, w, None, s, p, d)
    with pytest.raises(InputError, match="dtype"):
        deform_conv2d(x, off.double(), w, None, s, p, d)
    with pytest.raises(InputError, match="C=4"):
        DeformConv2d(4, 4, 3, padding=1)(torch.randn(1, 3, 6, 6))
    with pytest.raises(InputError, match="deform_groups"):
        DeformConv2d(4, 4, 3, deform_groups=3)
    with pytest.raises(InputError, match="groups"):
        ModulatedDeformConv2d(4, 6, 3, groups=4)


# 4. exact answers on tiny inputs ---------------------------------------------------------------------------
def _arange_5x5_expected() -> torch.Tensor:
    """3x3 all-ones kernel, padding 1, every offset 0.5 on a 5x5 arange map.

    Each sample sits at the centre of a 2x2 pixel block, i.e. the block's mean (missing pixels count 0).
    Pixel r is in the blocks with top-left row a in {r-1, r}; for output row y the tap rows are
    a in {y-1, y, y+1}, so pixel row r is counted |{r-1, r} & {y-1, y, y+1}| times (same for columns)."""
    img = torch.arange(25.0).view(5, 5)
    out = torch.zeros(5, 5)
    for y in range(5):
        for x in range(5):
            for r in range(5):
                for c in range(5):
                    my = len({r - 1, r} & {y - 1, y, y + 1})
                    mx = len({c - 1, c} & {x - 1, x, x + 1})
                    out[y, x] += my * mx * img[r, c] / 4
    return out


def test_hand_worked_arange_offsets_half():
    x = torch.arange(25.0).view(1, 1, 5, 5)
    off = torch.full((1, 18, 5, 5), 0.5)
    w = torch.ones(1, 1, 3, 3)
    expected = _arange_5x5_expected()
    # By hand: corner = (5 * 20 + 5 * 4) / 4 = 30 (row/column multiplicities 2, 2, 1);
    # centre = sum of the nine block means 5a + b + 3 over a, b in 1..3 = 135.
    assert expected[0, 0] == 30 and expected[2, 2] == 135
    v1 = deform_conv2d(x, off, w, None, 1, 1, 1)[0, 0]
    torch.testing.assert_close(v1, expected)
    torch.testing.assert_close(deform_conv2d_reference(x, off, w, None, 1, 1, 1)[0, 0], expected)
    v2 = modulated_deform_conv2d(x, off, torch.full((1, 9, 5, 5), 0.5), w, None, 1, 1, 1)[0, 0]
    torch.testing.assert_close(v2, expected / 2)


def test_offset_channel_order_is_dy_dx():
    x = torch.arange(20.0).view(1, 1, 4, 5)
    w = torch.ones(1, 1, 1, 1)
    right = torch.zeros(1, 2, 4, 5)
    right[:, 1] = 1.0  # dx = +1: out[y, x] = in[y, x + 1], zero past the right border
    expected = F.pad(x[..., 1:], (0, 1))
    torch.testing.assert_close(deform_conv2d(x, right, w), expected)
    torch.testing.assert_close(deform_conv2d_reference(x, right, w), expected)
    up = torch.zeros(1, 2, 4, 5)
    up[:, 0] = -1.0    # dy = -1: out[y, x] = in[y - 1, x]
    torch.testing.assert_close(deform_conv2d(x, up, w), F.pad(x[..., :-1, :], (0, 0, 1, 0)))


@pytest.mark.parametrize("cfg", DEFORM_CONV_CONFIGS)
def test_zero_offsets_equal_conv2d(cfg):
    b, c_in, h, w, c_out, k, s, p, d, groups, dg = cfg
    x, off, _, wt, bias, _ = deform_conv_inputs(b, c_in, h, w, c_out, k, s, p, d, groups, dg, torch.float64)
    expected = F.conv2d(x, wt, bias, s, p, d, groups)
    torch.testing.assert_close(deform_conv2d(x, torch.zeros_like(off), wt, bias, s, p, d), expected)
    torch.testing.assert_close(deform_conv2d_reference(x, torch.zeros_like(off), wt, bias, s, p, d), expected)


def test_fresh_modules_are_plain_convolutions():
    x = torch.randn(2, 4, 7, 6)
    m1 = DeformConv2d(4, 6, 3, stride=2, padding=1, groups=2, deform_groups=2)
    torch.testing.assert_close(m1(x), F.conv2d(x, m1.weight, None, 2, 1, 1, 2))
    m2 = ModulatedDeformConv2d(4, 6, 3, padding=2, dilation=2, deform_groups=4)
    with torch.no_grad():
        m2.bias.uniform_()
    torch.testing.assert_close(m2(x), F.conv2d(x, m2.weight, None, 1, 2, 2) * 0.5 + m2.bias.view(1, -1, 1, 1))


def test_modulated_module_chunks_offset_and_mask_like_mmcv():
    m = ModulatedDeformConv2d(4, 3, 3, padding=1, deform_groups=2).double()
    n = 2 * 9
    with torch.no_grad():
        m.conv_offset.bias.copy_(torch.linspace(-1.5, 1.5, 3 * n, dtype=torch.float64))
    x = torch.randn(1, 4, 5, 6, dtype=torch.float64)
    bvec = m.conv_offset.bias.view(1, -1, 1, 1).expand(1, 3 * n, 5, 6)
    offset, mask = bvec[:, : 2 * n], torch.sigmoid(bvec[:, 2 * n:])  # cat(o1, o2) == first 2N channels
    torch.testing.assert_close(m(x), deform_conv2d_reference(x, offset, m.weight, m.bias, 1, 1, 1, mask=mask))
