"""Tests for zoo.ops.deform_ps_roi_pool (deformable position-sensitive RoI pooling, R-FCN + DCN) particular to
it. The shared operator contract (fast == reference on random RoIs, gradcheck, meta device, bfloat16,
torch.export and torch.compile) is tests/ops/test_contract.py over the "deform_ps_roi_pool" family of
tests/support/op_table.py."""
from __future__ import annotations

import pytest
import torch
from torchvision.ops import ps_roi_align

from support import deformable_psroi_kernel as authors
from support.op_table import ROIS, ps_roi_pool_inputs
from zoo.errors import InputError
from zoo.ops.deform_ps_roi_pool import DeformPSRoIPool, deform_ps_roi_pool, deform_ps_roi_pool_reference

# 1. shapes -------------------------------------------------------------------------------------------------
def test_deform_ps_roi_pool_shapes_and_empty_rois():
    x, rois, offset = ps_roi_pool_inputs(d=6, g=3, classes=2, part=3)
    assert deform_ps_roi_pool(x, rois, offset, 3, spatial_scale=0.25).shape == (4, 6, 3, 3)
    assert deform_ps_roi_pool(x, rois, None, 3, 5, spatial_scale=0.25).shape == (4, 6, 5, 5)  # P != G
    assert deform_ps_roi_pool(x, rois, offset[:, :, :2, :2], 3, 5, 2).shape == (4, 6, 5, 5)  # T != P
    assert deform_ps_roi_pool(x, rois[:0], offset[:0], 3).shape == (0, 6, 3, 3)
    m = DeformPSRoIPool(5, 6, 3, spatial_scale=0.25, offset_classes=3)
    assert m(x, rois, torch.randn(2, 5, 11, 9)).shape == (4, 6, 3, 3)
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == {
        "conv_offset.weight": (2 * 3 * 9, 5, 1, 1), "conv_offset.bias": (2 * 3 * 9,)}
    assert torch.count_nonzero(m.conv_offset.weight) == 0 and torch.count_nonzero(m.conv_offset.bias) == 0


# 2. exceptions ---------------------------------------------------------------------------------------------
def test_deform_ps_roi_pool_errors():
    x, rois, offset = ps_roi_pool_inputs(d=6, g=3, classes=2, part=3)
    with pytest.raises(InputError, match="D x 4 channels"):
        deform_ps_roi_pool(x, rois, None, 2)
    with pytest.raises(InputError, match=r"\(K, 5\)"):
        deform_ps_roi_pool(x, rois[:, 1:], None, 3)
    with pytest.raises(InputError, match="offset"):
        deform_ps_roi_pool(x, rois, offset[:, :, :2], 3)           # T x T with T = part_size = 3
    with pytest.raises(InputError, match="offset"):
        deform_ps_roi_pool(x, rois, offset[:3], 3)                 # one offset field per RoI
    with pytest.raises(InputError, match="dividing the 6 output channels"):
        deform_ps_roi_pool(x, rois, torch.randn(4, 8, 3, 3), 3)    # M = 4 offset classes for 6 channels
    with pytest.raises(InputError, match="dividing"):
        deform_ps_roi_pool(x, rois, offset[:, :3], 3)              # odd offset channels
    with pytest.raises(InputError, match="positive"):
        deform_ps_roi_pool(x, rois, None, 3, sample_per_part=0)
    with pytest.raises(InputError, match="dtype"):
        deform_ps_roi_pool(x, rois.double(), None, 3)
    with pytest.raises(InputError, match="offset_classes=4"):
        DeformPSRoIPool(5, 6, 3, offset_classes=4)
    m = DeformPSRoIPool(5, 6, 3)
    with pytest.raises(InputError, match="features"):
        m(x, rois, torch.randn(2, 4, 11, 9))
    with pytest.raises(InputError, match="C=54"):
        m(x[:, :27], rois, torch.randn(2, 5, 11, 9))


# 3. zero offsets == torchvision's ps_roi_align, random offsets == the authors' kernel ----------------------
def _inside_rois(k: int, n: int, h: int, w: int, scale: float, gen: torch.Generator) -> torch.Tensor:
    """k RoIs (batch_index, x1, y1, x2, y2), x2 / y2 inclusive, whose samples all lie in the map: rounded
    corners in [0, W / scale - 1] keep the RoI inside [-0.5, W - 0.5] on the map."""
    rows = []
    for i in range(k):
        x1, x2 = sorted(torch.randint(0, int(w / scale), (2,), generator=gen).tolist())
        y1, y2 = sorted(torch.randint(0, int(h / scale), (2,), generator=gen).tolist())
        jitter = (torch.rand(4, generator=gen) * 0.8 - 0.4).tolist()  # rounds back to the whole pixel
        rows.append([i % n, x1 + jitter[0], y1 + jitter[1], x2 + jitter[2], y2 + jitter[3]])
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("n,h,w,k,s,scale", [(2, 13, 10, 7, 4, 0.25), (1, 9, 9, 3, 1, 0.5), (2, 6, 11, 7, 2, 1 / 16)])
def test_deform_ps_roi_pool_zero_offsets_equal_torchvision_ps_roi_align(n, h, w, k, s, scale):
    """Exactly what is equal: with zero offsets, group_size = pooled_size = P and sampling_ratio = S, and RoIs
    whose samples all lie within [-0.5, W - 0.5] x [-0.5, H - 0.5] (no sample is dropped, none is zero-padded),
    deform_ps_roi_pool(rois) == ps_roi_align(rois') with rois' the rounded RoI (x2, y2 inclusive -> + 1)
    moved up-left by half a sub-bin: the authors sample the sub-bin corners, torchvision their centres."""
    gen = torch.Generator().manual_seed(k * 100 + s)
    x = torch.randn(n, 5 * k * k, h, w, generator=gen, dtype=torch.float64)
    rois = _inside_rois(8, n, h, w, scale, gen)
    r = rois[:, 1:].round()  # no halves here: torch's rounding is the kernel's
    ex, ey = (r[:, 2] + 1 - r[:, 0]) / (2 * k * s), (r[:, 3] + 1 - r[:, 1]) / (2 * k * s)
    shifted = torch.stack([rois[:, 0], r[:, 0] - ex, r[:, 1] - ey, r[:, 2] + 1 - ex, r[:, 3] + 1 - ey], 1)
    expected = ps_roi_align(x, shifted, k, scale, s)
    ours = deform_ps_roi_pool(x, rois, None, k, sample_per_part=s, spatial_scale=scale)
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)
    zeros = torch.zeros(8, 2 * 5, k, k, dtype=torch.float64)  # per-class offsets, all zero
    torch.testing.assert_close(deform_ps_roi_pool(x, rois, zeros, k, sample_per_part=s, spatial_scale=scale),
                               expected, rtol=1e-12, atol=1e-12)
    # the half-sub-bin shift is what makes them equal
    plain = torch.cat([rois[:, :1], r[:, :2], r[:, 2:] + 1], 1)
    assert not torch.allclose(ps_roi_align(x, plain, k, scale, s), expected)


# (n, h, w, D, G, P, T, S, M, trans_std, spatial_scale): odd and non-square maps, batch > 1, several RoIs per
# image, P != G, T != P, per-class (M = D) and shared (M = 1) offsets, the R-FCN setting (G = P = T = 7, S = 4)
KERNEL_CASES = [
    (2, 11, 9, 6, 3, 3, 3, 2, 1, 0.3, 0.25),
    (1, 8, 13, 4, 2, 3, 2, 3, 2, 0.5, 0.25),
    (2, 7, 12, 6, 3, 3, 3, 1, 6, 0.1, 0.5),
    (3, 10, 10, 2, 7, 7, 7, 4, 2, 0.1, 1 / 16),
]


@pytest.mark.parametrize("case", KERNEL_CASES, ids=lambda c: "x".join(map(str, c[:9])))
def test_deform_ps_roi_pool_matches_the_authors_kernel(case):
    """Forward and backward against the line-by-line port of DeformablePSROIPool{Forward,BackwardAcc}Kernel
    (tests/support/deformable_psroi_kernel.py) on random offsets; the RoIs include ones partly outside the
    map, a tiny one and one larger than the map (samples dropped at the border)."""
    n, h, w, d, g, p, t, s, m, std, scale = case
    gen = torch.Generator().manual_seed(sum(case[:9]))
    x = torch.randn(n, d * g * g, h, w, generator=gen, dtype=torch.float64)
    rois = torch.tensor(ROIS, dtype=torch.float64) * (0.25 / scale)
    rois = torch.cat([rois, _inside_rois(4, n, h, w, scale, gen)])
    rois[:, 0] = torch.arange(len(rois)) % n
    offset = torch.randn(len(rois), 2 * m, t, t, generator=gen, dtype=torch.float64)
    kw = dict(spatial_scale=scale, output_dim=d, group_size=g, pooled_size=p, part_size=t, sample_per_part=s,
              trans_std=std)
    for off in (None, offset):
        expected, count = authors.forward(x, rois, off, **kw)
        assert (count == 0).any() and (count == s * s).any()  # dropped samples are exercised
        xs = x.clone().requires_grad_()
        offs = None if off is None else off.clone().requires_grad_()
        out = deform_ps_roi_pool(xs, rois, offs, g, p, t, s, std, scale)
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
        grad = torch.randn(out.shape, generator=gen, dtype=torch.float64)
        out.backward(grad)
        grad_x, grad_offset = authors.backward(grad, count, x, rois, off, **kw)
        torch.testing.assert_close(xs.grad, grad_x, rtol=1e-12, atol=1e-12)
        if off is not None:
            torch.testing.assert_close(offs.grad, grad_offset, rtol=1e-10, atol=1e-10)
    out32 = deform_ps_roi_pool(x.float(), rois.float(), offset.float(), g, p, t, s, std, scale)
    torch.testing.assert_close(out32.double(), authors.forward(x, rois, offset, **kw)[0], rtol=1e-5, atol=1e-5)


def test_deform_ps_roi_pool_module_is_the_authors_offset_chain():
    """DeformPSRoIPool = resnet_v1_101_rfcn_dcn.py's rfcn_cls_offset_t (1x1 conv) -> DeformablePSROIPooling
    no_trans (output_dim 2M, T x T) -> DeformablePSROIPooling with those offsets, trans_std 0.1."""
    gen = torch.Generator().manual_seed(3)
    m = DeformPSRoIPool(6, 4, 3, sample_per_part=2, spatial_scale=0.25, offset_classes=2).double()
    with torch.no_grad():
        m.conv_offset.weight.normal_(0, 0.5, generator=gen)
        m.conv_offset.bias.normal_(0, 0.5, generator=gen)
    features = torch.randn(2, 6, 11, 9, generator=gen, dtype=torch.float64)
    maps = torch.randn(2, 4 * 9, 11, 9, generator=gen, dtype=torch.float64)
    rois = torch.tensor(ROIS, dtype=torch.float64)
    kw = dict(spatial_scale=0.25, group_size=3, pooled_size=3, sample_per_part=2)
    trans, _ = authors.forward(m.conv_offset(features).detach(), rois, None, output_dim=4, **kw)
    expected, _ = authors.forward(maps, rois, trans, output_dim=4, part_size=3, trans_std=0.1, **kw)
    torch.testing.assert_close(m.offsets(features, rois), trans, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m(maps, rois, features), expected, rtol=1e-12, atol=1e-12)
    fresh = DeformPSRoIPool(6, 4, 3, sample_per_part=2, spatial_scale=0.25, offset_classes=2).double()
    torch.testing.assert_close(fresh(maps, rois, features), deform_ps_roi_pool(maps, rois, None, 3, None, None, 2,
                                                                               0.1, 0.25))


# 4. exact answers on tiny inputs ---------------------------------------------------------------------------
def test_deform_ps_roi_pool_hand_worked():
    # Map channel c = 100 c + column (ramp_x) or 100 c + row (ramp_y), 6 x 10, G = P = 2, S = 2, scale 1.
    # RoI (1.4, 0.6, 6.6, 2.5) rounds (C round, halves away from zero) to x 1..7, y 1..3 (torch.round would
    # give 2 for 2.5): start (0.5, 0.5), size 7 x 3, bins 3.5 x 1.5, samples at the sub-bin corners
    # x = 0.5, 2.25 | 4.0, 5.75 (means 1.375, 4.875) and y = 0.5, 1.25 | 2.0, 2.75 (means 0.875, 2.375).
    # Bin (i, j) reads channel 2 i + j.
    cols = torch.arange(10.0).expand(6, 10)
    rows = torch.arange(6.0).view(6, 1).expand(6, 10)
    rois = torch.tensor([[0, 1.4, 0.6, 6.6, 2.5]])
    ramp_x = torch.stack([100 * c + cols for c in range(4)]).unsqueeze(0)
    ramp_y = torch.stack([100 * c + rows for c in range(4)]).unsqueeze(0)
    for fn in (deform_ps_roi_pool, deform_ps_roi_pool_reference):
        torch.testing.assert_close(fn(ramp_x, rois, None, 2, None, None, 2)[0, 0],
                                   torch.tensor([[1.375, 104.875], [201.375, 304.875]]))
        torch.testing.assert_close(fn(ramp_y, rois, None, 2, None, None, 2)[0, 0],
                                   torch.tensor([[0.875, 100.875], [202.375, 302.375]]))
        # offsets (dx, dy) per part: dx = 0.5 on part (0, 0) -> +0.1 * 7 * 0.5 = 0.35 px;
        # dy = -1 on part (1, 1) -> -0.1 * 3 = -0.3 px
        offset = torch.zeros(1, 2, 2, 2)
        offset[0, 0, 0, 0] = 0.5
        offset[0, 1, 1, 1] = -1.0
        torch.testing.assert_close(fn(ramp_x, rois, offset, 2, None, None, 2)[0, 0],
                                   torch.tensor([[1.725, 104.875], [201.375, 304.875]]))
        torch.testing.assert_close(fn(ramp_y, rois, offset, 2, None, None, 2)[0, 0],
                                   torch.tensor([[0.875, 100.875], [202.375, 302.075]]))


def test_deform_ps_roi_pool_drops_samples_outside_the_map():
    # One bin (G = P = 1), S = 2, map value 10 + column. RoI x 0..1 (start -0.5, width 2, sub-bins 1),
    # shifted by trans_std * 2 * dx = -0.6: samples x = -1.1 (< -0.5: dropped) and -0.1 (clamped to 0,
    # value 10); y = -0.5, 0.5 both used. The mean of the used samples is 10 (RoIAlign would count the
    # dropped ones as 0); shifted further (-1.6) no sample is used and the bin is 0.
    x = (10 + torch.arange(4.0)).expand(1, 1, 3, 4).contiguous()
    rois = torch.tensor([[0, 0.0, 0.0, 1.0, 1.0]])
    shift = torch.tensor([[[[-0.3]], [[0.0]]]])  # (dx, dy) of the one part
    for fn in (deform_ps_roi_pool, deform_ps_roi_pool_reference):
        assert fn(x, rois, shift, 1, None, None, 2, 1.0).item() == pytest.approx(10.0)
        assert fn(x, rois, shift * 8 / 3, 1, None, None, 2, 1.0).item() == 0.0
    value, used = authors.forward(x, rois, shift, spatial_scale=1.0, output_dim=1, group_size=1, pooled_size=1,
                                  sample_per_part=2, trans_std=1.0)
    assert value.item() == pytest.approx(10.0) and used.item() == 2
