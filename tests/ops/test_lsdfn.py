"""Tests for zoo.ops.lsdfn (LS-DFN, arXiv 1803.07624) particular to it. The shared operator contract
(functional and module == lsdfn_reference on random shapes, the hand-written backward == autograd through
the reference, gradcheck, meta device, bfloat16, torch.compile) is tests/ops/test_contract.py over the
"lsdfn" family of tests/support/op_table.py."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as nnf

from support.op_table import lsdfn_inputs
from zoo.errors import InputError
from zoo.ops.lsdfn import LSDFN, lsdfn, lsdfn_reference


def _brute_force(f, u, v, pa, sa, gamma, at):
    """The module docstring's formula, one output value at a time (tiny inputs only)."""
    b, c, h, w = f.shape
    co, k, s = u.shape[1], int(round(v.shape[2] ** 0.5)), int(round(sa.shape[1] ** 0.5))
    r, half = (s - 1) // 2, (k - 1) // 2
    out = torch.zeros(b, co, h, w, dtype=f.dtype)
    for n in range(b):
        for y in range(h):
            for x in range(w):
                for a in range(s):
                    for bb in range(s):
                        cy, cx = y + (a - r) * gamma, x + (bb - r) * gamma
                        for i in range(k):
                            for j in range(k):
                                t = i * k + j
                                yy, xx = cy + i - half, cx + j - half
                                if not (0 <= yy < h and 0 <= xx < w):
                                    continue
                                if at == "output":
                                    att = pa[n, t, y, x] + 1
                                else:
                                    inside = 0 <= cy < h and 0 <= cx < w
                                    att = (pa[n, t, cy, cx] if inside else 0.0) + 1
                                kern = u[n, :, :, y, x] * v[n, :, t, y, x, None]  # (C', C)
                                if t == half * k + half:
                                    kern = kern + 1.0 / c
                                out[n, :, y, x] += (sa[n, a * s + bb, y, x] + 1) * att * (kern @ f[n, :, yy, xx])
    return out


# 1. shapes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("k,s,gamma,size", [(3, 5, 3, (9, 7)), (1, 3, 2, (4, 6)), (5, 1, 1, (5, 5))])
def test_module_shape(k, s, gamma, size):
    m = LSDFN(6, 4, k, s, gamma)
    y = m(torch.randn(2, 6, *size))
    assert y.shape == (2, 4, *size)
    assert m.kernel_u.out_channels == 4 * 6 and m.kernel_v.out_channels == 4 * k * k
    assert m.position_attention.out_channels == k * k and m.sample_attention.out_channels == s * s


def test_functional_shape_and_identity_feature_branch():
    f, u, v, pa, sa = lsdfn_inputs(2, 5, 3, 7, 4, 3, 3)
    assert lsdfn(f, u, v, pa, sa, 2).shape == (2, 3, 7, 4)
    assert lsdfn_reference(f, u, v, pa, sa, 2).shape == (2, 3, 7, 4)
    m = LSDFN(5, 3, feature_kernel_size=None)
    assert isinstance(m.feature, torch.nn.Identity)
    assert "samples_per_side=5" in repr(m)


# 2. exceptions --------------------------------------------------------------------------------

def test_module_input_errors():
    m = LSDFN(4, 2, 3, 3, 1)
    with pytest.raises(InputError, match="x must have C=4"):
        m(torch.randn(1, 3, 5, 5))
    with pytest.raises(InputError, match="unsqueeze"):
        m(torch.randn(4, 5, 5))
    with pytest.raises(InputError, match="floating"):
        m(torch.ones(1, 4, 5, 5, dtype=torch.int64))


@pytest.mark.parametrize("kwargs", [
    {"kernel_size": 2}, {"samples_per_side": 4}, {"sample_stride": 0},
    {"feature_kernel_size": 2}, {"position_attention_at": "input"}, {"attention_kernel_size": 0},
])
def test_module_argument_errors(kwargs):
    with pytest.raises(ValueError):
        LSDFN(4, 2, **kwargs)


def test_functional_errors():
    f, u, v, pa, sa = lsdfn_inputs(1, 4, 2, 5, 5, 3, 3)
    with pytest.raises(InputError, match="v must have K"):
        lsdfn(f, u, v[:, :, :8], pa, sa)
    with pytest.raises(InputError, match="sample_attention must have S"):
        lsdfn(f, u, v, pa, sa[:, :4])
    with pytest.raises(InputError, match="u must have C=4"):
        lsdfn(f, u[:, :, :3], v, pa, sa)
    with pytest.raises(InputError, match="position_attention"):
        lsdfn(f, u, v, pa[:, :, :4], sa)
    with pytest.raises(InputError, match="dtype"):
        lsdfn(f, u.double(), v, pa, sa)
    with pytest.raises(InputError, match="sample_stride"):
        lsdfn(f, u, v, pa, sa, 0)
    with pytest.raises(InputError, match="position_attention_at"):
        lsdfn_reference(f, u, v, pa, sa, 1, "centre")


# 4. exact answers -----------------------------------------------------------------------------

@pytest.mark.parametrize("at", ["output", "sample"])
@pytest.mark.parametrize("k,s,gamma", [(3, 3, 2), (3, 3, 1), (1, 5, 1)])
def test_reference_matches_brute_force(k, s, gamma, at):
    args = lsdfn_inputs(1, 2, 2, 4, 5, k, s, torch.float64, seed=k + s + gamma)
    torch.testing.assert_close(lsdfn_reference(*args, gamma, at), _brute_force(*args, gamma, at))
    torch.testing.assert_close(lsdfn(*args, gamma, at), _brute_force(*args, gamma, at))


@pytest.mark.parametrize("at", ["output", "sample"])
def test_s1_is_dynamic_local_filter(at):
    f, u, v, pa, sa = lsdfn_inputs(2, 4, 3, 6, 5, 3, 1, torch.float64)
    b, c, h, w = f.shape
    patches = nnf.unfold(f, 3, padding=1).view(b, c, 9, h, w)         # (B, C, k*k, H, W)
    kernel = u[:, :, :, None] * v[:, :, None]                          # (B, C', C, k*k, H, W)
    kernel[:, :, :, 4] += 1.0 / c
    expected = (kernel * (pa + 1)[:, None, None] * patches[:, None]).sum((2, 3)) * (sa + 1)
    torch.testing.assert_close(lsdfn(f, u, v, pa, sa, 1, at), expected)
    torch.testing.assert_close(lsdfn(f, u, v, pa, sa, 3, at), expected)  # gamma is irrelevant for s=1


def test_tiny_hand_example():
    # C = 1 row [1, 2, 3], k = 1, s = 3, zero kernel and attention: y[p] = sum of F at the sample
    # centres p + (alpha, beta) * gamma that fall inside the image.
    f = torch.tensor([[[[1.0, 2.0, 3.0]]]])
    z = torch.zeros
    args = (f, z(1, 1, 1, 1, 3), z(1, 1, 1, 1, 3), z(1, 1, 1, 3), z(1, 9, 1, 3))
    assert lsdfn(*args, 1).flatten().tolist() == [3.0, 6.0, 5.0]
    assert lsdfn(*args, 2).flatten().tolist() == [4.0, 2.0, 4.0]
    assert lsdfn_reference(*args, 2).flatten().tolist() == [4.0, 2.0, 4.0]


@pytest.mark.parametrize("s,gamma", [(3, 2), (5, 1)])
def test_initial_layer_is_channel_mean_over_sample_centres(s, gamma):
    m = LSDFN(4, 3, 3, s, gamma, feature_kernel_size=None)   # V = A = S = 0 at init
    x = torch.randn(2, 4, 7, 6)
    r = (s - 1) // 2
    mean = nnf.pad(x.mean(1, keepdim=True), (r * gamma,) * 4)
    expected = sum(mean[:, :, a * gamma: a * gamma + 7, b * gamma: b * gamma + 6]
                   for a in range(s) for b in range(s))
    torch.testing.assert_close(m(x), expected.expand(2, 3, 7, 6), rtol=1e-5, atol=1e-5)


def test_residual_start_still_trains_every_branch():
    torch.manual_seed(0)
    m = LSDFN(4, 3, 3, 3, 2)
    m(torch.randn(1, 4, 6, 6)).pow(2).sum().backward()
    for name in ("feature", "kernel_v", "position_attention", "sample_attention"):
        assert getattr(m, name).weight.grad.abs().sum() > 0, name


# 5. backward only where needed ----------------------------------------------------------------

def test_backward_only_for_inputs_that_need_it():
    f, u, v, pa, sa = lsdfn_inputs(1, 3, 2, 6, 5, 3, 3)
    sa.requires_grad_()
    lsdfn(f, u, v, pa, sa, 2).sum().backward()
    assert sa.grad is not None and f.grad is None
