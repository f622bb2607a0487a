"""Tests for zoo.ops.lsdfn (LS-DFN, arXiv 1803.07624)."""
from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as nnf

from zoo.errors import InputError
from zoo.ops.lsdfn import LSDFN, lsdfn, lsdfn_reference


def _inputs(b, c, co, h, w, k, s, dtype=torch.float32, seed=0, u_channels_last=False):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

    u = rnd(b, h, w, co, c).permute(0, 3, 4, 1, 2) if u_channels_last else rnd(b, co, c, h, w)
    return rnd(b, c, h, w), u, rnd(b, co, k * k, h, w), rnd(b, k * k, h, w), rnd(b, s * s, h, w)


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
    f, u, v, pa, sa = _inputs(2, 5, 3, 7, 4, 3, 3)
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
    f, u, v, pa, sa = _inputs(1, 4, 2, 5, 5, 3, 3)
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


# 3. fast == reference -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float64, 1e-10)])
@pytest.mark.parametrize("at", ["output", "sample"])
@pytest.mark.parametrize("b,c,co,h,w,k,s,gamma", [
    (1, 4, 3, 7, 5, 3, 1, 1),
    (2, 5, 3, 9, 6, 3, 3, 2),
    (1, 3, 2, 11, 7, 3, 5, 3),
    (2, 4, 5, 6, 8, 1, 5, 1),
    (1, 6, 2, 5, 9, 5, 3, 2),
    (1, 3, 4, 4, 3, 3, 5, 3),   # samples mostly outside the image
])
def test_fast_matches_reference(b, c, co, h, w, k, s, gamma, at, dtype, tol):
    args = _inputs(b, c, co, h, w, k, s, dtype, seed=h * w + s, u_channels_last=(b == 2))
    fast = lsdfn(*args, gamma, at)
    ref = lsdfn_reference(*args, gamma, at)
    torch.testing.assert_close(fast, ref, rtol=tol, atol=tol)


def test_module_matches_reference_on_its_branches():
    torch.manual_seed(0)
    m = LSDFN(5, 3, 3, 3, 2, position_attention_at="sample").double()
    for p in m.parameters():  # leave the residual start: every branch non-zero
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(2, 5, 8, 7, dtype=torch.float64)
    branches = m.branches(x)
    torch.testing.assert_close(m(x), lsdfn_reference(*branches, 2, "sample"))


# 4. exact answers -----------------------------------------------------------------------------

@pytest.mark.parametrize("at", ["output", "sample"])
@pytest.mark.parametrize("k,s,gamma", [(3, 3, 2), (3, 3, 1), (1, 5, 1)])
def test_reference_matches_brute_force(k, s, gamma, at):
    args = _inputs(1, 2, 2, 4, 5, k, s, torch.float64, seed=k + s + gamma)
    torch.testing.assert_close(lsdfn_reference(*args, gamma, at), _brute_force(*args, gamma, at))
    torch.testing.assert_close(lsdfn(*args, gamma, at), _brute_force(*args, gamma, at))


@pytest.mark.parametrize("at", ["output", "sample"])
def test_s1_is_dynamic_local_filter(at):
    f, u, v, pa, sa = _inputs(2, 4, 3, 6, 5, 3, 1, torch.float64)
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


# 5. gradcheck ---------------------------------------------------------------------------------

@pytest.mark.parametrize("at", ["output", "sample"])
def test_gradcheck(at):
    args = [t.requires_grad_() for t in _inputs(1, 2, 2, 4, 3, 3, 3, torch.float64)]
    assert torch.autograd.gradcheck(lambda *a: lsdfn(*a, 2, at), args)


@pytest.mark.parametrize("at", ["output", "sample"])
@pytest.mark.parametrize("b,c,co,h,w,k,s,gamma", [(2, 5, 3, 7, 10, 3, 5, 2), (3, 4, 2, 9, 6, 3, 3, 3), (1, 3, 4, 5, 5, 1, 5, 1)])
def test_gradients_match_reference(at, b, c, co, h, w, k, s, gamma):
    """The hand-written backward of the fast path against autograd through the reference, every input."""
    fast = [t.requires_grad_() for t in _inputs(b, c, co, h, w, k, s, torch.float64, seed=3)]
    ref = [t.detach().clone().requires_grad_() for t in fast]
    weight = torch.randn(b, co, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    (lsdfn(*fast, gamma, at) * weight).sum().backward()
    (lsdfn_reference(*ref, gamma, at) * weight).sum().backward()
    for name, a, r in zip(("features", "u", "v", "position_attention", "sample_attention"), fast, ref):
        torch.testing.assert_close(a.grad, r.grad, msg=name)


def test_backward_only_for_inputs_that_need_it():
    f, u, v, pa, sa = _inputs(1, 3, 2, 6, 5, 3, 3)
    sa.requires_grad_()
    lsdfn(f, u, v, pa, sa, 2).sum().backward()
    assert sa.grad is not None and f.grad is None


# 6. meta device -------------------------------------------------------------------------------

def test_meta_device():
    m = LSDFN(8, 4, 3, 5, 3, device="meta")
    y = m(torch.empty(2, 8, 11, 9, device="meta"))
    assert y.device.type == "meta" and y.shape == (2, 4, 11, 9)


# 7. bfloat16 ----------------------------------------------------------------------------------

def test_bfloat16_forward():
    torch.manual_seed(0)
    m = LSDFN(8, 4, 3, 3, 2)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(1, 8, 7, 9)
    y32 = m(x)
    y16 = m.to(torch.bfloat16)(x.bfloat16())
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), y32, rtol=5e-2, atol=5e-2 * y32.abs().max().item())


# 8. torch.compile -----------------------------------------------------------------------------

def _compile_case(at):
    torch.manual_seed(0)
    m = LSDFN(4, 3, 3, 3, 2, position_attention_at=at)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return m, torch.randn(1, 4, 6, 5)


@pytest.mark.parametrize("at", ["output", "sample"])
def test_dynamo_traces_module_without_graph_breaks(at):
    m, x = _compile_case(at)
    compiled = torch.compile(m, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), m(x))


@pytest.mark.slow  # inductor codegen takes ~30-60 s on 2 shared cores
def test_torch_compile_inductor_module():
    m, x = _compile_case("sample")
    start = time.perf_counter()
    compiled = torch.compile(m, fullgraph=True)
    torch.testing.assert_close(compiled(x), m(x), rtol=1e-4, atol=1e-4)
    print(f"compile + first call {time.perf_counter() - start:.1f} s")
