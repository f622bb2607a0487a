"""Tests for zoo.ops.depth_dc (HDFNet DepthDC branches and the DDPM block)."""
from __future__ import annotations

import pytest
import torch

from zoo.errors import InputError
from zoo.ops.depth_dc import DDPM, BasicConv2d, DenseLayer, DepthDC
from zoo.ops.dynamic_filter import dynamic_local_filter_reference

TOL = {torch.float32: dict(atol=1e-5, rtol=1e-4), torch.float64: dict(atol=1e-12, rtol=1e-10)}


def _prepare(m: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Eval mode with non-trivial BatchNorm statistics."""
    g = torch.Generator().manual_seed(seed)
    for bn in m.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            with torch.no_grad():
                bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.1)
                bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
    return m.eval()


def _depth_dc_reference(m: DepthDC, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """HDFNet's DepthDC3x3 forward: generate kernels, unfold-multiply-sum, fuse."""
    return m.fuse(dynamic_local_filter_reference(x, m.generate_kernel(y), m.kernel_size, m.dilation))


def _ddpm_reference(m: DDPM, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = m.down_input(x)
    outs = [_depth_dc_reference(getattr(m, f"branch_{d}"), x, y) for d in m.dilations]
    return m.fuse(torch.cat((x, *outs), 1))


# 1. shapes ------------------------------------------------------------------------------------------
def test_shapes():
    x, y = torch.randn(2, 8, 9, 11), torch.randn(2, 6, 9, 11)
    assert DepthDC(8, 6, 5, dilation=3)(x, y).shape == (2, 5, 9, 11)
    assert DDPM(8, 6, 12)(x, y).shape == (2, 12, 9, 11)
    assert DDPM(8, 6, 12, dilations=(1, 2))(x, y).shape == (2, 12, 9, 11)
    assert DenseLayer(8, 8)(x).shape == (2, 8, 9, 11)


def test_hdfnet_structure_and_key_names():
    """DDPM(64, 64, 64, 3, 4) as in every HDFNet decoder stage; names are HDFNet's (gernerate -> generate)."""
    sd = DDPM(64, 64, 64, 3, 4).state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["down_input.weight"] == (16, 64, 1, 1)
    assert shapes["fuse.basicconv.0.weight"] == (64, 64, 3, 3) and "fuse.basicconv.0.bias" not in shapes
    for d in (1, 3, 5):
        p = f"branch_{d}."
        assert shapes[p + "fuse.weight"] == (16, 16, 3, 3) and shapes[p + "fuse.bias"] == (16,)
        assert shapes[p + "generate_kernel.0.weight"] == (64, 64, 3, 3)
        assert shapes[p + "generate_kernel.1.down.weight"] == (16, 64, 1, 1)
        assert [shapes[p + f"generate_kernel.1.denseblock.{i}.basicconv.0.weight"] for i in range(4)] == [
            (16, 16, 3, 3), (16, 32, 3, 3), (16, 48, 3, 3), (16, 64, 3, 3)]
        assert shapes[p + "generate_kernel.1.fuse.basicconv.0.weight"] == (64, 80, 3, 3)
        assert shapes[p + "generate_kernel.2.weight"] == (144, 64, 1, 1)
    assert [getattr(DDPM(64, 64, 64), f"branch_{d}").dilation for d in (1, 3, 5)] == [1, 3, 5]
    assert len(sd) == 3 + 5 + 3 * (4 + 2 + 2 + 5 * 6)  # down_input, fuse BN-conv, 3 x DepthDC


# 2. exceptions --------------------------------------------------------------------------------------
def test_exceptions():
    m = DepthDC(4, 6, 4)
    with pytest.raises(InputError, match="C=4"):
        m(torch.randn(1, 5, 8, 8), torch.randn(1, 6, 8, 8))
    with pytest.raises(InputError, match="y must have H=8"):
        m(torch.randn(1, 4, 8, 8), torch.randn(1, 6, 7, 8))
    with pytest.raises(InputError, match="B=2"):
        DDPM(8, 6, 8)(torch.randn(2, 8, 8, 8), torch.randn(1, 6, 8, 8))
    with pytest.raises(ValueError, match="odd"):
        DepthDC(4, 6, 4, kernel_size=2)


# 3. fast == reference -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dilation,shape", [(1, (1, 7, 9)), (3, (3, 8, 5)), (5, (2, 11, 12))])
def test_depth_dc_matches_unfold_reference(dtype, dilation, shape):
    torch.manual_seed(0)
    b, h, w = shape
    m = _prepare(DepthDC(4, 8, 3, dilation=dilation, dtype=dtype))
    x, y = torch.randn(b, 4, h, w, dtype=dtype), torch.randn(b, 8, h, w, dtype=dtype)
    torch.testing.assert_close(m(x, y), _depth_dc_reference(m, x, y), **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(2, 9, 7), (1, 6, 13)])
def test_ddpm_matches_reference(dtype, shape):
    torch.manual_seed(0)
    b, h, w = shape
    m = _prepare(DDPM(12, 8, 8, dtype=dtype))
    x, y = torch.randn(b, 12, h, w, dtype=dtype), torch.randn(b, 8, h, w, dtype=dtype)
    torch.testing.assert_close(m(x, y), _ddpm_reference(m, x, y), **TOL[dtype])


# 4. exact answers -----------------------------------------------------------------------------------
def _fixed_kernel_branch(tap: int, dilation: int) -> DepthDC:
    """A branch whose generated kernel is one-hot on ``tap`` everywhere and whose fuse conv is the identity."""
    m = DepthDC(2, 4, 2, dilation=dilation)
    with torch.no_grad():
        last = m.generate_kernel[2]
        last.weight.zero_()
        last.bias.zero_()
        last.bias[tap::9] = 1.0
        m.fuse.weight.zero_()
        m.fuse.bias.zero_()
        m.fuse.weight[[0, 1], [0, 1], 1, 1] = 1.0
    return m.eval()


def test_centre_tap_kernel_is_identity_and_corner_tap_shifts():
    x, y = torch.randn(2, 2, 9, 10), torch.randn(2, 4, 9, 10)
    assert torch.equal(_fixed_kernel_branch(4, 3)(x, y), x)
    out = _fixed_kernel_branch(0, 3)(x, y)  # tap (0, 0) at dilation 3 reads x[i - 3, j - 3]
    assert torch.equal(out[..., 3:, 3:], x[..., :-3, :-3])
    assert torch.equal(out[..., :3, :], torch.zeros_like(out[..., :3, :]))


# 5. gradcheck ---------------------------------------------------------------------------------------
def test_gradcheck():
    torch.manual_seed(0)
    m = _prepare(DepthDC(2, 4, 2, dilation=2, dtype=torch.float64))
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    y = torch.randn(1, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x, y))


# 6. meta device -------------------------------------------------------------------------------------
def test_meta_device():
    with torch.device("meta"):
        m = DDPM(64, 64, 64)
        out = m(torch.empty(2, 64, 10, 10), torch.empty(2, 64, 10, 10))
    assert out.device.type == "meta" and out.shape == (2, 64, 10, 10)


# 7. bfloat16 ----------------------------------------------------------------------------------------
def test_bfloat16_forward():
    torch.manual_seed(0)
    m = _prepare(DDPM(8, 8, 8))
    x, y = torch.randn(2, 8, 9, 7), torch.randn(2, 8, 9, 7)
    expected = m(x, y)
    out = m.to(torch.bfloat16)(x.bfloat16(), y.bfloat16())
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), expected, atol=0.1 * expected.abs().max().item(), rtol=0.1)


def test_reset_parameters_reinitialises_every_layer():
    m = DDPM(8, 8, 8)
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(7.0)
    m.reset_parameters()
    assert all((p != 7.0).any() for p in m.parameters())
    assert isinstance(m.fuse, BasicConv2d)
