"""Tests for zoo.ops.dense_crf (DeepLab v2's fully connected CRF) particular to it. The shared operator
contract (fast == reference on random shapes, gradcheck, meta device, bfloat16, torch.export) is
tests/ops/test_contract.py over the "dense_crf" family of tests/support/op_table.py."""
from __future__ import annotations

import math

import pytest
import torch

from support.op_table import crf_inputs
from zoo.errors import InputError
from zoo.ops.dense_crf import DEEPLAB_V2_CRF, DenseCRF, dense_crf, dense_crf_reference


# 1. shapes ------------------------------------------------------------------------------------------
def test_marginals_are_distributions_of_the_logits_shape():
    logits, image = crf_inputs((2, 5, 9, 13))
    q = DenseCRF(bi_radius=2, bi_dilation=3)(logits, image)
    assert q.shape == logits.shape and q.dtype == logits.dtype
    torch.testing.assert_close(q.sum(1), torch.ones(2, 9, 13))


# 2. exceptions --------------------------------------------------------------------------------------
def test_exceptions_name_the_argument():
    logits, image = crf_inputs((1, 3, 6, 7))
    with pytest.raises(InputError, match="image"):
        dense_crf(logits, image[..., :5])
    with pytest.raises(InputError, match="floating"):
        dense_crf(logits, image.to(torch.uint8))
    with pytest.raises(InputError, match="unsqueeze"):
        dense_crf(logits[0], image[0])
    with pytest.raises(InputError, match="normalization"):
        dense_crf(logits, image, normalization="row")
    with pytest.raises(InputError, match="bi_rgb_std"):
        DenseCRF(bi_rgb_std=0.0)
    with pytest.raises(InputError, match="bi_dilation"):
        DenseCRF(bi_dilation=0)
    with pytest.raises(InputError, match="iterations must be an int"):
        DenseCRF(iterations=-1)
    with pytest.raises(InputError, match="iterations must be an int"):
        dense_crf(logits, image, iterations=2.5)
    with pytest.raises(InputError, match="bi_radius must be an int"):
        DenseCRF(bi_radius=2.0)


# 4. exact answers -----------------------------------------------------------------------------------
@pytest.mark.parametrize("options", [dict(iterations=0), dict(pos_weight=0.0, bi_weight=0.0)])
def test_without_pairwise_terms_the_marginals_are_the_softmax(options):
    logits, image = crf_inputs((2, 4, 5, 6), torch.float64)
    torch.testing.assert_close(dense_crf(logits, image, **options), logits.softmax(1))


def test_one_iteration_on_two_pixels_by_hand():
    """Two pixels side by side, colours 0 and 30: Kb = [[1, e_b], [e_b, 1]] with
    e_b = exp(-1 / 2 sxy^2 - 30^2 / 2 srgb^2), Ks likewise with exp(-1 / 2 pos_xy_std^2); both rows sum to
    1 + e, so the symmetric normaliser divides by 1 + e; Q1 = softmax(log P + wb Kb~ P + ws Ks~ P)."""
    logits = torch.tensor([[[[2.0, -1.0]], [[0.0, 0.5]]]], dtype=torch.float64)      # (1, 2, 1, 2)
    image = torch.tensor([[[[0.0, 30.0]]]], dtype=torch.float64)                     # (1, 1, 1, 2)
    wb, ws, sxy, srgb, sp = 4.0, 3.0, 2.0, 20.0, 1.0
    q = dense_crf(logits, image, iterations=1, pos_weight=ws, pos_xy_std=sp, bi_weight=wb, bi_xy_std=sxy,
                  bi_rgb_std=srgb, bi_radius=1)
    eb = math.exp(-1 / (2 * sxy ** 2) - 30 ** 2 / (2 * srgb ** 2))
    es = math.exp(-1 / (2 * sp ** 2))
    p = logits[0, :, 0].softmax(0)                                                   # (K=2, pixels=2)
    expected = []
    for i, j in ((0, 1), (1, 0)):
        pairwise = wb * (p[:, i] + eb * p[:, j]) / (1 + eb) + ws * (p[:, i] + es * p[:, j]) / (1 + es)
        expected.append((p[:, i].log() + pairwise).softmax(0))
    torch.testing.assert_close(q[0, :, 0], torch.stack(expected, 1))


def test_window_covering_the_image_is_the_fully_connected_crf():
    """bi_dilation 1 and a radius past the image edge: every pixel pair is in the appearance kernel, as in
    Krähenbühl & Koltun's model (compared with the explicit N x N reference at a radius that cuts it)."""
    logits, image = crf_inputs((1, 3, 5, 6), torch.float64)
    full = dense_crf(logits, image, bi_radius=6, bi_xy_std=3.0, bi_rgb_std=60.0)
    torch.testing.assert_close(full, dense_crf_reference(logits, image, bi_radius=40, bi_xy_std=3.0, bi_rgb_std=60.0))
    cut = dense_crf(logits, image, bi_radius=1, bi_xy_std=3.0, bi_rgb_std=60.0)
    assert not torch.allclose(full, cut)


def test_labels_snap_to_a_colour_edge():
    """A grey image with a bright right half; the network's logits blur the edge over 4 columns. The
    CRF's appearance kernel moves every label to the colour edge."""
    h, w = 12, 16
    image = torch.full((1, 3, h, w), 40.0)
    image[..., w // 2:] = 200.0
    ramp = torch.linspace(-3, 3, w).view(1, 1, 1, w).expand(1, 1, h, w).clone()
    ramp = ramp + 0.8                                    # the blurred edge sits 2 columns left of the colour edge
    logits = torch.cat([-ramp, ramp], 1)
    before = logits.argmax(1)
    after = dense_crf(logits, image, bi_weight=10.0, bi_xy_std=8.0, bi_rgb_std=10.0, bi_radius=4, bi_dilation=2).argmax(1)
    truth = (torch.arange(w) >= w // 2).long().expand(1, h, w)
    assert (before != truth).any()
    assert torch.equal(after, truth)


def test_deeplab_v2_parameters_are_kazuto1011_voc12():
    assert DEEPLAB_V2_CRF == dict(iterations=10, pos_weight=3.0, pos_xy_std=1.0, bi_weight=4.0, bi_xy_std=67.0,
                                  bi_rgb_std=3.0)
    assert DenseCRF(**DEEPLAB_V2_CRF).options["bi_xy_std"] == 67.0
