"""zoo.saliency: S-measure, F-measure (adaptive, max), MAE on hand-made cases; rgbd-saliency presets;
the pipeline on the real RGB-D SOD samples (rgbd_sod_SSD)."""
from __future__ import annotations

import pytest
import torch

from zoo.errors import InputError
from zoo.saliency import SaliencyMetrics, f_measure_adaptive, f_measure_curve, mae, s_measure
from zoo.tasks.salient_object_detection import RGBDSaliencyTransforms, SaliencyPostprocess


def _gt():
    gt = torch.zeros(8, 8, dtype=torch.bool)
    gt[2:6, 2:6] = True
    return gt


def test_perfect_prediction():
    gt = _gt()
    pred = gt.float()
    assert float(mae(pred, gt)) == 0.0
    assert float(s_measure(pred, gt)) == pytest.approx(1.0, abs=1e-9)
    assert float(f_measure_adaptive(pred, gt)) == pytest.approx(1.0)
    assert float(f_measure_curve(pred, gt).max()) == pytest.approx(1.0)


def test_known_values():
    gt = _gt()  # 16 foreground pixels of 64
    half = torch.zeros(8, 8)
    half[2:4, 2:6] = 1.0  # 8 of the 16 foreground pixels, no false positive: P = 1, R = 0.5
    f = 1.3 * 0.5 / (0.3 + 0.5)
    assert float(f_measure_adaptive(half, gt)) == pytest.approx(f)
    assert float(f_measure_curve(half, gt).max()) == pytest.approx(f)
    assert float(mae(half, gt)) == pytest.approx(8 / 64)
    # without normalisation a constant 0.25 map has MAE 0.25 * 48/64 + 0.75 * 16/64
    assert float(mae(torch.full((8, 8), 0.25), gt, normalize=False)) == pytest.approx(0.375)
    # all-background GT: S = 1 - mean(pred); all-foreground: mean(pred)
    pred = torch.linspace(0, 1, 64).view(8, 8)
    assert float(s_measure(pred, torch.zeros(8, 8), normalize=False)) == pytest.approx(0.5)
    assert float(s_measure(pred * 0.5, torch.ones(8, 8), normalize=False)) == pytest.approx(0.25)
    # inverted prediction scores low, a blurred one in between
    assert float(s_measure(1 - gt.float(), gt)) < 0.2
    blurred = torch.nn.functional.avg_pool2d(gt.float()[None, None], 3, 1, 1)[0, 0]
    assert 0.5 < float(s_measure(blurred, gt)) < 1.0


def test_curve_thresholds():
    gt = _gt()
    pred = torch.zeros(8, 8)
    pred[gt] = 0.5  # quantised to 127
    curve = f_measure_curve(pred, gt, normalize=False)
    assert curve.shape == (256,)
    assert torch.all(curve[1:128] == 1.0) and torch.all(curve[128:] == 0.0)
    assert float(curve[0]) == pytest.approx(1.3 * 0.25 / (0.3 * 0.25 + 1))  # t = 0: everything positive


def test_dataset_aggregation_and_errors():
    gt = _gt()
    metrics = SaliencyMetrics()
    metrics.update(torch.stack([gt.float(), 1 - gt.float()])[:, None], torch.stack([gt, gt])[:, None])
    out = metrics.compute()
    assert metrics.count == 2
    assert out["mae"] == pytest.approx(0.5)
    assert out["max_f"] == pytest.approx(max(f_measure_curve(gt.float(), gt).add(f_measure_curve(1 - gt.float(), gt)).div(2)).item())
    with pytest.raises(InputError):
        mae(torch.zeros(4, 4), torch.zeros(4, 5))
    with pytest.raises(ValueError):
        SaliencyMetrics().compute()


def test_presets():
    t = RGBDSaliencyTransforms(size=32)
    rgb = torch.full((2, 3, 20, 24), 255, dtype=torch.uint8)
    depth = torch.full((2, 1, 20, 24), 51, dtype=torch.uint8)
    x, d = t(rgb, depth)
    assert x.shape == (2, 3, 32, 32) and d.shape == (2, 1, 32, 32)
    torch.testing.assert_close(x[:, 0], torch.full((2, 32, 32), (1 - 0.485) / 0.229))
    torch.testing.assert_close(d, torch.full_like(d, 0.2))
    with pytest.raises(InputError):
        t(rgb, depth[:, :, :10])
    post = SaliencyPostprocess()
    prob = post(torch.zeros(2, 1, 8, 8), (20, 24))
    assert prob.shape == (2, 20, 24)
    torch.testing.assert_close(prob, torch.full_like(prob, 0.5))
    with pytest.raises(InputError):
        post(torch.zeros(2, 3, 8, 8), (20, 24))


def test_pipeline_on_real_rgbd_samples(realdata):
    from zoo.io import read_image

    from zoo.models.hdfnet import hdfnet

    root = realdata / "rgbd_sod_SSD"
    names = sorted(p.stem for p in (root / "RGB").glob("*.jpg"))
    assert len(names) == 3
    torch.manual_seed(0)
    model = hdfnet(backbone="vgg16").eval()
    transforms, post = RGBDSaliencyTransforms(size=64), SaliencyPostprocess()  # small for CPU tests
    metrics = SaliencyMetrics()
    for name in names:
        rgb = read_image(root / "RGB" / f"{name}.jpg")[None]
        depth = read_image(root / "depth" / f"{name}.png")[:1][None]
        gt = read_image(root / "GT" / f"{name}.png")[0]
        if depth.shape[-2:] != rgb.shape[-2:]:  # as the reference loader: depth resized to the image
            depth = torch.nn.functional.interpolate(depth.float(), size=rgb.shape[-2:], mode="bilinear") / 255
        x, d = transforms(rgb, depth)
        assert x.shape == (1, 3, 64, 64) and d.shape == (1, 1, 64, 64)
        assert 0 <= float(d.min()) and float(d.max()) <= 1
        with torch.no_grad():
            prob = post(model(x, d), rgb.shape[-2:])
        assert prob.shape == (1, *rgb.shape[-2:]) and gt.shape == rgb.shape[-2:]
        assert 0 <= float(prob.min()) and float(prob.max()) <= 1
        assert 0 < float((gt >= 128).float().mean()) < 1  # a real mask with object and background
        metrics.update(prob[0], gt)
        assert float(mae(gt.float() / 255, gt)) == 0.0  # the GT scores perfectly against itself
        assert float(s_measure(gt.float() / 255, gt)) == pytest.approx(1.0, abs=1e-6)
    out = metrics.compute()
    assert set(out) == {"mae", "s_measure", "adaptive_f", "max_f", "mean_f"}
    assert all(0.0 <= v <= 1.0 for v in out.values())
