"""Tests for zoo.ops.depth_dc (HDFNet DepthDC branches and the DDPM block) particular to it. The shared
operator contract (DepthDC and DDPM == their unfold references on random shapes, gradcheck, meta device,
bfloat16, torch.compile) is tests/ops/test_contract.py over the "depth_dc" family of
tests/support/op_table.py."""
from __future__ import annotations

import pytest
import torch

from zoo.errors import InputError
from zoo.ops.depth_dc import DDPM, BasicConv2d, DenseLayer, DepthDC

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


# 5. reset_parameters --------------------------------------------------------------------------------
def test_reset_parameters_reinitialises_every_layer():
    m = DDPM(8, 8, 8)
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(7.0)
    m.reset_parameters()
    assert all((p != 7.0).any() for p in m.parameters())
    assert isinstance(m.fuse, BasicConv2d)
