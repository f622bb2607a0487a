"""zoo.layers.upsample: Caffe's bilinear filler and the fixed bilinear x-factor upsampling."""
import pytest
import torch

from zoo.layers import FixedBilinearUpsample, bilinear_kernel


def test_kernel_hand_worked():
    # size 4: f = 2, c = 0.75; 1 - |i / 2 - 0.75| = 0.25, 0.75, 0.75, 0.25
    v = torch.tensor([0.25, 0.75, 0.75, 0.25], dtype=torch.float64)
    torch.testing.assert_close(bilinear_kernel(4, dtype=torch.float64), torch.outer(v, v))


def test_upsampling_keeps_a_constant_image_constant_inside():
    up = FixedBilinearUpsample(2, 4).double()
    out = up(torch.full((1, 2, 5, 5), 3.0, dtype=torch.float64))
    assert out.shape == (1, 2, 20, 20)
    torch.testing.assert_close(out[..., 4:-4, 4:-4], torch.full_like(out[..., 4:-4, 4:-4], 3.0))


def test_weight_is_a_persistent_buffer_and_not_trained():
    up = FixedBilinearUpsample(3, 8)
    assert "weight" in up.state_dict() and not list(up.parameters())


@pytest.mark.parametrize("factor", [1, 3])
def test_factor_must_be_even(factor):
    with pytest.raises(ValueError, match="even integer"):
        FixedBilinearUpsample(1, factor)
