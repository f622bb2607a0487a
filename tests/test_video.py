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
