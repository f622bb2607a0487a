"""Video prediction (e.g. ``dfn-moving-mnist``): the ``video-frames`` transforms and post-processing presets.

zoo neither evaluates, trains nor predicts (``zoo predict``) this task; the model cards show the Python API.

Frames are (B, T, 1, H, W) grey sequences, uint8 in [0, 255] or float in [0, 1]; (B, T, H, W) is accepted.
"""
from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from zoo.errors import InputError
from zoo.tasks.base import RawInput, Task
from zoo.tasks.preprocess import check_input_args, check_min_size, unit_float

__all__ = ["VIDEO_PREDICTION", "VideoFramesTransforms", "VideoFramesPostprocess"]


def _to_frames(frames: Tensor) -> Tensor:
    if not isinstance(frames, Tensor):
        raise InputError("frames must be a tensor (B, T, 1, H, W)")
    if frames.dim() == 4:
        frames = frames.unsqueeze(2)
    if frames.dim() != 5 or frames.shape[2] != 1:
        raise InputError(f"frames must have shape (B, T, 1, H, W) or (B, T, H, W), got {tuple(frames.shape)}")
    return unit_float(frames, "frames")


def _resize(frames: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(frames.shape[-2:]) == size:
        return frames
    b, t = frames.shape[:2]
    out = F.interpolate(frames.flatten(0, 1), size=size, mode="bilinear", align_corners=False)
    return out.view(b, t, 1, *size)


class VideoFramesTransforms(nn.Module):
    """Frames (B, T, 1, H, W) / (B, T, H, W), uint8 or float in [0, 1] -> float (B, T, 1, size, size)."""

    def __init__(self, size: int | None = 64, min_size: int | None = None) -> None:
        super().__init__()
        check_input_args(1.0, min_size)
        self.size, self.min_size = size, min_size

    def forward(self, frames: Tensor) -> Tensor:
        x = _to_frames(frames)
        check_min_size(x, self.min_size, "frames")
        return x if self.size is None else _resize(x, (self.size, self.size))


class VideoFramesPostprocess(nn.Module):
    """Predicted frames (B, T, 1, h, w) -> clamped to [0, 1], resized to ``size`` -> (B, T, 1, H, W)."""

    def forward(self, output: Tensor, size: Sequence[int]) -> Tensor:
        frames = _to_frames(output)
        return _resize(frames.clamp(0, 1), tuple(int(v) for v in size[-2:]))


VIDEO_PREDICTION = Task(
    name="video-prediction",
    headline_metrics=("MSE", "PSNR"),
    raw_inputs=lambda lead, h, w: (RawInput("frames", (lead[0], 1, h, w),
                                            "uint8 grey frames in [0, 255], (B, T, 1, H, W)"),),
    input_names=("frames",),
    usage=(
        "frames = torch.rand(1, 10, 1, 64, 64)                        # B x T x 1 x H x W in [0, 1]\n"
        "future = model.postprocess(model(model.transforms(frames)), frames.shape[-2:])  # B x 10 x 1 x H x W"
    ),
    transforms={"video-frames": VideoFramesTransforms},
    postprocess={"video-frames": VideoFramesPostprocess},
)
