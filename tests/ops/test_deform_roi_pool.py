"""Tests for zoo.ops.deform_roi_pool (deformable / modulated deformable RoI pooling, PS RoI pooling)
particular to it. The shared operator contract (fast == reference on random RoIs, gradcheck, meta device,
bfloat16, torch.export and torch.compile) is tests/ops/test_contract.py over the "deform_roi_pool" family of
tests/support/op_table.py. Deformable PS RoI pooling: tests/ops/test_deform_ps_roi_pool.py."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torchvision.ops import roi_align

from support.op_table import ROIS, roi_pool_inputs
from zoo.errors import InputError
from zoo.ops.deform_roi_pool import (
    DeformRoIPool,
    ModulatedDeformRoIPool,
    PSRoIPool,
    deform_roi_pool,
    deform_roi_pool_reference,
    ps_roi_pool,
)

# 1. shapes -------------------------------------------------------------------------------------------------
def test_shapes_and_empty_rois():
    x, rois, offset = roi_pool_inputs()
    assert deform_roi_pool(x, rois, offset, (3, 4), 0.25, 2).shape == (4, 3, 3, 4)
    assert deform_roi_pool(x, rois, None, 7, 0.25).shape == (4, 3, 7, 7)
    assert deform_roi_pool(x, rois[:0], None, 7, 0.25).shape == (0, 3, 7, 7)
    assert deform_roi_pool(x, rois[:0], None, 7, 0.25, 2).shape == (0, 3, 7, 7)
    for cls in (DeformRoIPool, ModulatedDeformRoIPool):
        assert cls(7, 3, 32, spatial_scale=0.25)(x, rois).shape == (4, 3, 7, 7)


def test_state_dict_keys_match_mmcv_packs():
    m = ModulatedDeformRoIPool(7, 4, deform_fc_channels=16)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {
        "offset_fc.0.weight": (16, 196), "offset_fc.0.bias": (16,), "offset_fc.2.weight": (16, 16),
        "offset_fc.2.bias": (16,), "offset_fc.4.weight": (98, 16), "offset_fc.4.bias": (98,),
        "mask_fc.0.weight": (16, 196), "mask_fc.0.bias": (16,), "mask_fc.2.weight": (49, 16), "mask_fc.2.bias": (49,),
    }
    assert {k for k in DeformRoIPool(7, 4, 16).state_dict()} == {k for k in shapes if k.startswith("offset_fc")}
    assert torch.count_nonzero(m.offset_fc[4].weight) == 0 and torch.count_nonzero(m.mask_fc[2].bias) == 0
    assert torch.count_nonzero(m.offset_fc[0].weight) > 0 and torch.count_nonzero(m.mask_fc[0].weight) > 0


def test_ps_roi_pool_is_torchvision():
    assert PSRoIPool is torchvision.ops.PSRoIPool and ps_roi_pool is torchvision.ops.ps_roi_pool


# 2. exceptions ---------------------------------------------------------------------------------------------
def test_errors():
    x, rois, offset = roi_pool_inputs()
    with pytest.raises(InputError, match=r"\(K, 5\)"):
        deform_roi_pool(x, rois[:, 1:], None, (3, 4))
    with pytest.raises(InputError, match="offset"):
        deform_roi_pool(x, rois, offset[:, :, :2], (3, 4))
    with pytest.raises(InputError, match="offset"):
        deform_roi_pool(x, rois, offset[:3], (3, 4))
    with pytest.raises(InputError, match="N,C,H,W"):
        deform_roi_pool(x[0], rois, None, (3, 4))
    with pytest.raises(InputError, match="dtype"):
        deform_roi_pool(x, rois.double(), None, (3, 4))
    with pytest.raises(InputError, match="floating"):
        deform_roi_pool(x.long(), rois, None, (3, 4))
    with pytest.raises(InputError, match="C=5"):
        DeformRoIPool(7, 5, 16)(x, rois)
    with pytest.raises(InputError, match="sampling_ratio > 0"):
        deform_roi_pool(x.to("meta"), rois.to("meta"), None, (3, 4), 0.25, 0)


# 3. zero offsets == torchvision's roi_align(aligned=True) --------------------------------------------------
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_zero_offsets_equal_roi_align_aligned(sampling_ratio):
    x, rois, offset = roi_pool_inputs(c=5, h=13, w=10, out=(7, 7))
    expected = roi_align(x, rois, (7, 7), 0.25, sampling_ratio, aligned=True)
    torch.testing.assert_close(deform_roi_pool(x, rois, None, 7, 0.25, sampling_ratio), expected)
    torch.testing.assert_close(deform_roi_pool(x, rois, torch.zeros_like(offset), 7, 0.25, sampling_ratio), expected)
    module = DeformRoIPool(7, 5, 32, spatial_scale=0.25, sampling_ratio=sampling_ratio)
    torch.testing.assert_close(module(x, rois), expected)
    modulated = ModulatedDeformRoIPool(7, 5, 32, spatial_scale=0.25, sampling_ratio=sampling_ratio)
    torch.testing.assert_close(modulated(x, rois), 0.5 * expected)  # zero-initialised mask fc -> sigmoid(0)


# 4. exact answers on tiny inputs ---------------------------------------------------------------------------
def test_hand_worked_bin_shift():
    # Input = column index (ramp in x) on channel 0, row index on channel 1. RoIAlign of a linear map is the
    # bin centre. RoI x 2..10, y 3..7 (scale 1): aligned start (1.5, 2.5), size 8 x 4, 4 x 2 bins of 2 x 2,
    # bin centres x = 2.5, 4.5, 6.5, 8.5 and y = 3.5, 5.5. Offsets shift by gamma * 8 * dx and gamma * 4 * dy.
    ramp_x = torch.arange(20.0).expand(12, 20)
    ramp_y = torch.arange(12.0).view(12, 1).expand(12, 20)
    x = torch.stack([ramp_x, ramp_y]).unsqueeze(0)
    rois = torch.tensor([[0, 2.0, 3.0, 10.0, 7.0]])
    offset = torch.zeros(1, 2, 2, 4)
    offset[0, 0] = 0.5     # dx -> +0.1 * 8 * 0.5 = 0.4 px
    offset[0, 1, 1] = -1.0  # dy on the second bin row -> -0.1 * 4 = -0.4 px
    for fn in (deform_roi_pool, deform_roi_pool_reference):
        out = fn(x, rois, offset, (2, 4), 1.0, 2, 0.1)[0]
        torch.testing.assert_close(out[0], torch.tensor([[2.9, 4.9, 6.9, 8.9]] * 2))
        torch.testing.assert_close(out[1], torch.tensor([[3.5] * 4, [5.1] * 4]))


def test_module_offset_layout_is_dx_then_dy():
    x, rois, _ = roi_pool_inputs(c=2, out=(2, 3))
    m = DeformRoIPool((2, 3), 2, 8, spatial_scale=0.25, sampling_ratio=2)
    bias = torch.linspace(-0.5, 0.5, 12)
    with torch.no_grad():
        m.offset_fc[4].bias.copy_(bias)
    offset = bias.view(1, 2, 2, 3).expand(len(ROIS), -1, -1, -1)  # mmcv: view(K, 2, ph, pw), channel 0 = dx
    torch.testing.assert_close(m(x, rois), deform_roi_pool_reference(x, rois, offset, (2, 3), 0.25, 2))

    mm = ModulatedDeformRoIPool((2, 3), 2, 8, spatial_scale=0.25, sampling_ratio=2)
    with torch.no_grad():
        mm.mask_fc[2].bias.copy_(torch.linspace(-2, 2, 6))
    mask = torch.sigmoid(torch.linspace(-2, 2, 6)).view(1, 1, 2, 3)
    torch.testing.assert_close(mm(x, rois), deform_roi_pool(x, rois, None, (2, 3), 0.25, 2) * mask)
