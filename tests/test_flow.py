"""zoo.flow: .flo files, EPE / Fl metrics, Middlebury colours, the optical-flow transforms/postprocess."""
from __future__ import annotations

import struct

import pytest
import torch

from zoo.errors import InputError
from zoo.flow import FLO_MAGIC, epe, flow_to_color, outlier_rate, padded_size, read_flo, write_flo
from zoo.registry import Preset
from zoo.tasks.optical_flow import OpticalFlowPostprocess, OpticalFlowTransforms
from zoo.transforms import build_postprocess, build_transforms


# --------------------------------------------------------------------------------------- .flo
def test_flo_round_trip(tmp_path):
    flow = torch.randn(2, 5, 7) * 10
    flow[0, 1, 2] = 1e10  # unknown values survive the round trip
    write_flo(flow, tmp_path / "a.flo")
    data = (tmp_path / "a.flo").read_bytes()
    assert struct.unpack("<fii", data[:12]) == (FLO_MAGIC, 7, 5) and len(data) == 12 + 5 * 7 * 8
    # interleaved (u, v) per pixel, row-major
    assert struct.unpack("<ff", data[12:20]) == (flow[0, 0, 0].item(), flow[1, 0, 0].item())
    torch.testing.assert_close(read_flo(tmp_path / "a.flo"), flow, rtol=0, atol=0)


def test_flo_errors(tmp_path):
    (tmp_path / "bad.flo").write_bytes(struct.pack("<fii", 1.0, 2, 2) + bytes(32))
    with pytest.raises(InputError, match="magic"):
        read_flo(tmp_path / "bad.flo")
    (tmp_path / "short.flo").write_bytes(struct.pack("<fii", FLO_MAGIC, 2, 2) + bytes(8))
    with pytest.raises(InputError, match="expected"):
        read_flo(tmp_path / "short.flo")
    with pytest.raises(InputError):
        write_flo(torch.zeros(3, 2, 2), tmp_path / "x.flo")


def test_read_real_flyingchairs_flo(realdata):
    from zoo.io import read_image

    folder = realdata / "flyingchairs" / "data"
    for i in range(4):
        flow = read_flo(folder / f"{i:07d}-gt.flo")
        assert flow.shape == (2, 384, 512) and flow.dtype == torch.float32
        assert torch.isfinite(flow).all() and flow.abs().max() < 1000 and flow.abs().max() > 0.5
        img = read_image(folder / f"{i:07d}-img0.ppm")
        assert img.shape == (3, 384, 512)
    crop = read_flo(realdata / "flyingchairs_mmflow_crops" / "00001_flow.flo")
    assert crop.shape == (2, 50, 50) and torch.isfinite(crop).all()


# --------------------------------------------------------------------------------------- metrics
def test_epe_hand_made_and_reductions():
    gt = torch.zeros(2, 2, 1, 2)
    pred = torch.zeros(2, 2, 1, 2)
    pred[0, 0, 0, 0], pred[0, 1, 0, 0] = 3.0, 4.0      # image 0: EPEs 5 and 0
    pred[1, 0, 0, :] = 1.0                              # image 1: EPEs 1 and 1
    assert epe(pred, gt).item() == pytest.approx(7 / 4)
    assert epe(pred, gt, reduction="image").item() == pytest.approx((2.5 + 1) / 2)
    # Unknown ground truth (>= 1e9) is left out: image 1 keeps one pixel -> reductions differ.
    gt[1, :, 0, 1] = 1e10
    assert epe(pred, gt).item() == pytest.approx(6 / 3)
    assert epe(pred, gt, reduction="image").item() == pytest.approx((2.5 + 1) / 2)
    valid = torch.tensor([[[True, False]], [[True, True]]])
    assert epe(pred, gt, valid).item() == pytest.approx(6 / 2)
    assert epe(pred, gt, reduction="none").shape == (2, 1, 2)
    # an image without any valid pixel does not count in the per-image mean
    gt[1] = float("nan")
    assert epe(pred, gt, reduction="image").item() == pytest.approx(2.5)
    with pytest.raises(ValueError, match="reduction"):
        epe(pred, gt, reduction="mean")
    with pytest.raises(InputError):
        epe(pred[:, :, :, :1], gt)


def test_outlier_rate_hand_made():
    gt = torch.zeros(1, 2, 1, 4)
    gt[0, 0] = torch.tensor([100.0, 100.0, 0.0, 0.0])
    pred = gt.clone()
    pred[0, 0, 0, 0] += 4.0     # EPE 4 > 3 but < 5 % of 100: inlier
    pred[0, 0, 0, 1] += 6.0     # EPE 6 > 3 and > 5: outlier
    pred[0, 0, 0, 2] += 2.9     # EPE 2.9 < 3: inlier
    pred[0, 1, 0, 3] += 3.5     # EPE 3.5 > 3 and > 0: outlier
    assert outlier_rate(pred, gt).item() == pytest.approx(0.5)
    assert outlier_rate(pred, gt, reduction="none").tolist() == [[[0.0, 1.0, 0.0, 1.0]]]


# --------------------------------------------------------------------------------------- colours
def test_flow_to_color_known_colours():
    flow = torch.tensor([[1.0, -1.0, 0.0, 0.0, 5e9], [0.0, 0.0, 0.0, 1.0, 0.0]]).view(1, 2, 1, 5)
    img = flow_to_color(flow)
    assert img.dtype == torch.uint8 and img.shape == (1, 3, 1, 5)
    assert img[0, :, 0, 0].tolist() == [255, 0, 0]      # right: atan2(-0.0, -1) = -pi -> wheel index 0 (red)
    assert img[0, :, 0, 1].tolist() == [0, 209, 255]    # left: wheel index 27 (cyan-blue)
    assert img[0, :, 0, 2].tolist() == [255, 255, 255]  # zero flow: white
    assert img[0, :, 0, 3].tolist() == [255, 229, 0]    # down: wheel index 13.5, G = (221 + 238) / 2
    assert img[0, :, 0, 4].tolist() == [0, 0, 0]        # unknown: black
    up = flow_to_color(torch.tensor([0.0, -1.0]).view(1, 2, 1, 1))
    assert up.flatten().tolist() == [88, 0, 255]          # up: wheel index 40.5, R = (78 + 98) / 2
    # a given max_flow: half the magnitude -> half-saturated; above it -> darkened by 0.75
    half = flow_to_color(torch.tensor([2.0, 0.0]).view(1, 2, 1, 1), max_flow=4.0)
    assert half[0, :, 0, 0].tolist() == [255, 127, 127]
    over = flow_to_color(torch.tensor([8.0, 0.0]).view(1, 2, 1, 1), max_flow=4.0)
    assert over[0, :, 0, 0].tolist() == [191, 0, 0]


def test_flow_to_color_normalises_each_image():
    flow = torch.zeros(2, 2, 1, 2)
    flow[0, 0, 0, 0], flow[1, 0, 0, 0] = 1.0, 100.0
    img = flow_to_color(flow)
    assert torch.equal(img[0], img[1])


# --------------------------------------------------------------------------------------- presets
def test_presets_are_registered():
    t = build_transforms(Preset("optical-flow", {"mean": "pair"}))
    p = build_postprocess(Preset("optical-flow"))
    assert isinstance(t, OpticalFlowTransforms) and isinstance(p, OpticalFlowPostprocess)


def test_transforms_normalise_and_pad():
    torch.manual_seed(0)
    pair = torch.randint(0, 256, (2, 2, 3, 50, 70), dtype=torch.uint8)
    x = OpticalFlowTransforms(pad_mode="constant")(pair)
    assert x.shape == (2, 6, 64, 128) and padded_size((50, 70)) == (64, 128)
    core = x[:, :, :50, :70].reshape(2, 2, 3, 50, 70)
    # per-pair, per-channel mean over both frames is zero; the padding is zero (constant mode)
    torch.testing.assert_close(core.mean(dim=(1, 3, 4)), torch.zeros(2, 3), atol=1e-6, rtol=0)
    assert x[:, :, 50:].abs().max() == 0 and x[:, :, :, 70:].abs().max() == 0
    expected = pair.float() / 255
    expected = expected - expected.mean(dim=(1, 3, 4), keepdim=True)
    torch.testing.assert_close(core, expected)
    # replicate padding (default) repeats the last row / column
    r = OpticalFlowTransforms()(pair)
    torch.testing.assert_close(r[:, :, 63], r[:, :, 49])
    # two separate frames, a single pair, fixed mean, BGR, per-frame mean, no mean
    a, b = pair[:, 0], pair[:, 1]
    torch.testing.assert_close(OpticalFlowTransforms()((a, b)), r)
    assert OpticalFlowTransforms()(pair[0]).shape == (1, 6, 64, 128)
    fixed = OpticalFlowTransforms(mean=[0.1, 0.2, 0.3])(pair)[:, :3, :50, :70]
    torch.testing.assert_close(fixed[:, 2], pair[:, 0, 2].float() / 255 - 0.3)
    bgr = OpticalFlowTransforms(mean=None, channel_order="bgr")(pair)[:, :3, :50, :70]
    torch.testing.assert_close(bgr[:, 0], pair[:, 0, 2].float() / 255)
    per = OpticalFlowTransforms(mean="image")(pair)[:, 3:, :50, :70]
    torch.testing.assert_close(per.mean(dim=(2, 3)), torch.zeros(2, 3), atol=1e-6, rtol=0)


def test_transforms_errors():
    t = OpticalFlowTransforms()
    with pytest.raises(InputError):
        t(torch.rand(1, 3, 3, 64, 64))
    with pytest.raises(InputError):
        t((torch.rand(1, 3, 64, 64), torch.rand(1, 3, 32, 64)))
    with pytest.raises(InputError):
        t(torch.zeros(1, 2, 3, 8, 8, dtype=torch.int32))
    with pytest.raises(ValueError):
        OpticalFlowTransforms(mean="dataset")


def test_postprocess_unpads_and_rescales():
    post = OpticalFlowPostprocess()
    flow = torch.randn(1, 2, 64, 128)
    out = post(flow, (50, 70))
    assert torch.equal(out, flow[..., :50, :70])
    # a quarter-resolution constant flow in its own pixels -> x4 vectors at full size
    quarter = torch.ones(1, 2, 16, 32)
    torch.testing.assert_close(post(quarter, (50, 70)), torch.full((1, 2, 50, 70), 4.0))
    # training tuple: flow2 in network units -> x div_flow and x4
    torch.testing.assert_close(post((quarter * 0.5, None), (64, 128)), torch.full((1, 2, 64, 128), 40.0))
    assert post({"flows": flow.unsqueeze(1)}, (64, 128)).shape == (1, 2, 64, 128)
    # ptlflow's dict is already at the frames' size: kept as is (not stretched from the padded size)
    at_frame_size = torch.ones(1, 1, 2, 50, 70)
    torch.testing.assert_close(post({"flows": at_frame_size}, (50, 70)), torch.ones(1, 2, 50, 70))
    with pytest.raises(InputError):
        post(torch.randn(1, 3, 64, 64), (64, 64))


def test_transforms_postprocess_round_trip_with_model():
    from zoo.models.flownet import flownets

    torch.manual_seed(0)
    model = flownets(width=0.25).eval()
    pair = torch.randint(0, 256, (1, 2, 3, 70, 100), dtype=torch.uint8)
    with torch.no_grad():
        x = OpticalFlowTransforms()(pair)
        out = model(x)
        flow = OpticalFlowPostprocess()(out, pair.shape[-2:])
    assert x.shape == (1, 6, 128, 128) and flow.shape == (1, 2, 70, 100)
    torch.testing.assert_close(flow, out[..., :70, :100])


def test_presets_under_torch_compile():
    t, p = OpticalFlowTransforms(), OpticalFlowPostprocess()

    def run(pair):
        x = t(pair)
        return p(x[:, :2], pair.shape[-2:])

    pair = torch.rand(1, 2, 3, 40, 70)
    torch.testing.assert_close(torch.compile(run, backend="eager", fullgraph=True)(pair), run(pair))


def test_zero_flow_epe_on_real_pairs(realdata):
    # The training notes quote a zero-flow EPE of 5.23 on these four pairs (per-pixel = per-image here).
    folder = realdata / "flyingchairs" / "data"
    gt = torch.stack([read_flo(folder / f"{i:07d}-gt.flo") for i in range(4)])
    zero = torch.zeros_like(gt)
    assert epe(zero, gt).item() == pytest.approx(5.23, abs=0.01)
    assert epe(zero, gt, reduction="image").item() == pytest.approx(epe(zero, gt).item(), rel=1e-5)
    assert 0 < outlier_rate(zero, gt).item() <= 1
    assert flow_to_color(gt).shape == (4, 3, 384, 512)
