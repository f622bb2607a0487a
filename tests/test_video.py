"""zoo.tasks.video_prediction: the video-frames transforms and post-processing presets."""
from __future__ import annotations

import pytest
import torch

from zoo.errors import InputError
from zoo.tasks.video_prediction import VideoFramesPostprocess, VideoFramesTransforms


def test_video_frames_presets():
    t = VideoFramesTransforms(64)
    u8 = torch.full((2, 10, 32, 32), 255, dtype=torch.uint8)
    out = t(u8)
    assert out.shape == (2, 10, 1, 64, 64) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.ones_like(out))
    with pytest.raises(InputError):
        t(torch.zeros(2, 10, 3, 64, 64))
    with pytest.raises(InputError):
        t(torch.zeros(2, 10, 64, 64, dtype=torch.int64))
    post = VideoFramesPostprocess()
    pred = torch.tensor([-0.5, 0.5, 1.5]).view(1, 3, 1, 1, 1).expand(1, 3, 1, 8, 8)
    res = post(pred, (16, 16))
    assert res.shape == (1, 3, 1, 16, 16)
    torch.testing.assert_close(res[0, :, 0, 0, 0], torch.tensor([0.0, 0.5, 1.0]))


# ------------------------------------------------------------------ BCE, evaluation, training, zoo predict
import math  # noqa: E402
from pathlib import Path  # noqa: E402

from torch import nn  # noqa: E402

import zoo  # noqa: E402
from zoo.tasks import get_task  # noqa: E402
from zoo.tasks.video_prediction import COPY_LAST_EPS, evaluate_video  # noqa: E402
from zoo.video import bce_per_image, bce_per_pixel, frame_bce  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[1] / "zoo" / "samples"
VIDEO = get_task("video-prediction")


def test_bce_per_image_and_per_pixel_by_hand():
    pred = torch.full((1, 2, 1, 2, 2), 0.25)
    target = torch.zeros(1, 2, 1, 2, 2)
    target[0, 0, 0, 0, 0] = 1.0                      # frame 0: one lit pixel; frame 1: dark
    f0 = -math.log(0.25) - 3 * math.log(0.75)
    f1 = -4 * math.log(0.75)
    torch.testing.assert_close(frame_bce(pred, target), torch.tensor([[f0, f1]]))
    assert float(bce_per_image(pred, target)) == pytest.approx((f0 + f1) / 2, rel=1e-6)
    assert float(bce_per_pixel(pred, target)) == pytest.approx((f0 + f1) / 8, rel=1e-6)
    with pytest.raises(ValueError):
        frame_bce(pred, target[:, :1])


class _Constant(nn.Module):
    """Predicts ``value`` everywhere for ``out_frames`` frames (with the task's presets attached)."""

    def __init__(self, value: float, out_frames: int = 1) -> None:
        super().__init__()
        self.value, self.out_frames = value, out_frames
        self.transforms, self.postprocess = VideoFramesTransforms(size=None), VideoFramesPostprocess()

    def forward(self, frames):
        b, _, c, h, w = frames.shape
        return torch.full((b, self.out_frames, c, h, w), self.value)


def _tiny_sequences():
    first = {"inputs": torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]], [[[0.0, 0.0], [0.0, 1.0]]]]),   # 2 x 1 x 2 x 2
             "targets": torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])}
    second = {"inputs": torch.zeros(2, 1, 2, 2), "targets": torch.tensor([[[[0.5, 0.0], [0.0, 0.0]]]])}
    return [first, second]


def test_evaluator_and_copy_last_baseline_by_hand():
    data = _tiny_sequences()
    out = evaluate_video(_Constant(0.25), data)
    # model: sequence 1 target [[1, 0], [0, 0]]; sequence 2 one pixel at 0.5
    m1 = -math.log(0.25) - 3 * math.log(0.75)
    m2 = -0.5 * math.log(0.25) - 0.5 * math.log(0.75) - 3 * math.log(0.75)
    assert out["sequences"] == 2 and out["pixels_per_frame"] == 4
    assert out["bce"] == pytest.approx((m1 + m2) / 2, rel=1e-6)
    assert out["bce_pixel"] == pytest.approx((m1 + m2) / 8, rel=1e-6)
    assert out["mse"] == pytest.approx(((0.75**2 + 3 * 0.25**2) + (0.25**2 + 3 * 0.25**2)) / 8, rel=1e-6)
    # copy-last: the last input clamped to [eps, 1 - eps]; sequence 1 copies [[0, 0], [0, 1]]
    lo, hi = COPY_LAST_EPS, 1 - COPY_LAST_EPS
    c1 = -math.log(lo) - math.log(1 - hi) - 2 * math.log(1 - lo)       # lit pixel missed, wrong pixel lit, 2 right
    c2 = -0.5 * math.log(lo) - 0.5 * math.log(1 - lo) - 3 * math.log(1 - lo)
    assert out["copy_last_bce"] == pytest.approx((c1 + c2) / 2, rel=1e-6)
    assert out["copy_last_mse"] == pytest.approx((2 / 4 + 0.25 / 4) / 2, rel=1e-6)
    assert out["floor_bce"] == pytest.approx(math.log(2) / 2, rel=1e-6)   # the one grey pixel: its entropy
    assert out["bce_ratio"] == pytest.approx(out["bce"] / out["copy_last_bce"])
    # without a model: the baseline and the floor only (Task.evaluates_without_model)
    baseline = VIDEO.evaluate(None, data)
    assert "bce" not in baseline and baseline["copy_last_bce"] == out["copy_last_bce"]


def test_training_step_gives_finite_loss_and_gradients():
    from zoo.data import MovingDigits
    from zoo.data.positions import collate
    from zoo.tasks.base import TrainingRun

    torch.manual_seed(0)
    model = zoo.create("dfn-moving-mnist", width=2, in_frames=3, out_frames=2).train()
    data = MovingDigits(2, size=16, digit_size=8, num_frames=5, input_frames=3, speed=2.0)
    batch = collate(data.__getitems__([0, 1]))
    run = TrainingRun(network=model, transforms=VideoFramesTransforms(size=None), postprocess=model.postprocess,
                      options={})
    loss, metric = VIDEO.training.step(model, batch, run)
    assert torch.isfinite(loss) and loss > 0 and not metric.requires_grad
    assert float(metric) == pytest.approx(float(loss.detach()) / 256, rel=1e-6)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.filters.weight.grad.abs().sum() > 0 and model.encoder[0].weight.grad.abs().sum() > 0


def test_train_then_evaluate_a_run(tmp_path):
    from zoo.evaluation import main as evaluate_main
    from zoo.training import main as train_main

    record = train_main(["--model", "convnet-moving-mnist", "--out", str(tmp_path / "run"), "--arch-override",
                         "width=2", "--data", "moving-digits:16", "--size", "32", "32", "--steps", "2",
                         "--batch-size", "2", "--lr", "1e-3", "--log-every", "1", "--threads", "1", "--no-progress"])
    assert record["step"] == 2 and math.isfinite(record["bce_pixel"])
    result = evaluate_main(["--data", "moving-digits:3", "--size", "32", "32", "--model", "convnet-moving-mnist",
                            "--arch-override", "width=2", "--checkpoint", str(tmp_path / "run"), "--threads", "1"])
    assert result["sequences"] == 3 and result["bce"] > result["floor_bce"] > 0
    assert evaluate_main(["--data", "moving-digits:3", "--size", "32", "32"])["copy_last_bce"] == result["copy_last_bce"]


@pytest.mark.parametrize("name,rows", [("dfn-moving-mnist", 4), ("convnet-moving-mnist", 2)])
def test_predict_draws_inputs_predictions_and_filters(name, rows):
    from zoo.io import read_image

    frames = [read_image(p) for p in sorted(SAMPLES.glob("moving_digits_*.png"))]
    assert len(frames) == VIDEO.predict.num_inputs == 10
    torch.manual_seed(0)
    model = zoo.create(name, width=2)
    with torch.inference_mode():
        picture, summary = VIDEO.predict.draw(model, frames, None)
    assert picture.dtype == torch.uint8 and picture.shape == (3, rows * 66 - 2, 10 * 66 - 2)
    assert summary["input_frames"] == 10 and summary["predicted_frames"] == 10
    assert ("filter_positions" in summary) == (name == "dfn-moving-mnist")
    # the first row shows the input frames as they are
    torch.testing.assert_close(picture[:, :64, :64], frames[0])
