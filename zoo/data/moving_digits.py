"""``MovingDigits``: Moving-MNIST-style sequences from real handwritten digits (presets: :mod:`zoo.tasks.video_prediction`).

Moving MNIST (Srivastava, Mansimov, Salakhutdinov, ICML 2015, https://arxiv.org/abs/1502.04681; the
"bouncing MNIST" of DFN, https://arxiv.org/abs/1605.09673): ``num_digits`` digits of 28 x 28 pixels
move with constant velocity inside a 64 x 64 frame and bounce off the edges; digits are combined by a
pixel-wise maximum; 20 frames, the first 10 observed and the last 10 predicted.

Digits: the real handwritten digits that scikit-learn ships in its wheel
(``sklearn.datasets.load_digits``: 1797 images of 8 x 8 pixels with 17 grey levels, UCI "Optical
Recognition of Handwritten Digits"; no download). They are upscaled to ``digit_size`` (28, MNIST's
size) by bilinear interpolation (``align_corners=False``) and scaled from 0..16 to [0, 1]; so the strokes
are smooth and blurrier than MNIST's. ``split="train"`` uses the images whose index is not a multiple
of 5 (1437), ``"test"`` the others (360). Requires scikit-learn (``pip install dynzoo[train]``).

Motion (interpretation of the original generator): the top-left corner starts uniformly in
[0, size - digit_size]^2 (real-valued), the direction is uniform in [0, 2 pi) and the speed is
``speed`` pixels per frame (default 3.6 = the original step length 0.1 x (64 - 28)); the unfolded
position ``p0 + v t`` is folded into [0, size - digit_size] by reflection (exact bouncing), and the digit
is pasted at the floor of that position.

Determinism and speed: each sample's parameters (digit ids, start, direction) come from a
``torch.Generator`` seeded with ``sample_seed(seed, index)``; rendering is vectorised over the whole
batch (one ``scatter_reduce`` with ``amax``). Samples: ``{"inputs": (T_in, 1, H, W), "targets":
(T_out, 1, H, W)}`` float32 in [0, 1].

Presets: ``video-frames`` transforms: frames (B, T, 1, H, W) or (B, T, H, W), uint8 in [0, 255] or float
in [0, 1] -> float (B, T, 1, size, size) in [0, 1] (bilinear resize when the size differs; ``size=None``
keeps it). Postprocess: predicted frames (B, T, 1, h, w) -> clamped to [0, 1] and resized bilinearly to
``size`` -> (B, T, 1, H, W).
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from zoo.data.shapes import sample_seed

__all__ = ["MovingDigits", "load_digit_images"]


@functools.lru_cache(maxsize=8)
def _digits(split: str, digit_size: int) -> Tensor:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("MovingDigits needs scikit-learn's bundled digits: pip install 'dynzoo[train]' "
                          "(or pip install scikit-learn)") from exc
    images = torch.as_tensor(load_digits().images, dtype=torch.float32) / 16.0  # (1797, 8, 8)
    keep = torch.arange(images.shape[0]) % 5
    images = images[keep != 0] if split == "train" else images[keep == 0]
    up = F.interpolate(images[:, None], size=(digit_size, digit_size), mode="bilinear", align_corners=False)
    return up[:, 0].clamp_(0, 1).contiguous()


def load_digit_images(split: str = "train", digit_size: int = 28) -> Tensor:
    """scikit-learn's 8 x 8 digits of ``split`` upscaled to (N, digit_size, digit_size) in [0, 1]."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return _digits(split, int(digit_size))


class MovingDigits(Dataset):
    """Seeded Moving-MNIST-style sequences (see the module docstring); ``len`` = ``length``."""

    def __init__(self, length: int = 10_000, *, split: str = "train", seed: int = 0, size: int = 64,
                 num_frames: int = 20, input_frames: int = 10, num_digits: int = 2, digit_size: int = 28,
                 speed: float = 3.6) -> None:
        if digit_size > size:
            raise ValueError(f"digit_size ({digit_size}) must not exceed size ({size})")
        if not 0 < input_frames < num_frames:
            raise ValueError(f"input_frames must be in 1..num_frames-1, got {input_frames} of {num_frames}")
        if num_digits < 1 or length < 0:
            raise ValueError(f"num_digits must be >= 1 and length >= 0, got {num_digits}, {length}")
        self.length, self.split, self.seed, self.size = length, split, seed, size
        self.num_frames, self.input_frames, self.num_digits = num_frames, input_frames, num_digits
        self.digit_size, self.speed = digit_size, float(speed)
        self.digits = load_digit_images(split, digit_size)

    def __len__(self) -> int:
        return self.length

    def _params(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        g = torch.Generator().manual_seed(sample_seed(self.seed, index))
        d = self.num_digits
        ids = torch.randint(0, self.digits.shape[0], (d,), generator=g)
        start = torch.rand(d, 2, generator=g, dtype=torch.float64) * (self.size - self.digit_size)
        theta = torch.rand(d, generator=g, dtype=torch.float64) * (2 * math.pi)
        return ids, start, theta

    def generate(self, indices: Sequence[int]) -> Tensor:
        """Frames (B, num_frames, 1, size, size) for the sample ``indices``, rendered in one pass."""
        for i in indices:
            if not 0 <= i < self.length:
                raise IndexError(f"index {i} out of range for MovingDigits of length {self.length}")
        params = [self._params(int(i)) for i in indices]
        b, t, d, s, k = len(params), self.num_frames, self.num_digits, self.size, self.digit_size
        ids = torch.stack([p[0] for p in params])  # (B, D)
        start = torch.stack([p[1] for p in params])  # (B, D, 2) (y, x)
        theta = torch.stack([p[2] for p in params])  # (B, D)
        velocity = torch.stack((theta.sin(), theta.cos()), -1) * self.speed  # (B, D, 2)
        steps = torch.arange(t, dtype=torch.float64)
        unfolded = start[:, None] + steps[None, :, None, None] * velocity[:, None]  # (B, T, D, 2)
        span = float(s - k)
        if span > 0:
            r = torch.remainder(unfolded, 2 * span)
            pos = torch.where(r > span, 2 * span - r, r).floor().long()
        else:
            pos = torch.zeros_like(unfolded, dtype=torch.long)
        offs = torch.arange(k)
        rows = pos[..., 0, None, None] + offs[:, None]  # (B, T, D, k, 1)
        cols = pos[..., 1, None, None] + offs[None, :]  # (B, T, D, 1, k)
        frame = (torch.arange(b)[:, None] * t + torch.arange(t)[None, :])[:, :, None, None, None]
        index = (frame * s + rows) * s + cols  # (B, T, D, k, k)
        src = self.digits[ids][:, None].expand(b, t, d, k, k)
        out = torch.zeros(b * t * s * s)
        out.scatter_reduce_(0, index.reshape(-1), src.reshape(-1), reduce="amax", include_self=True)
        return out.view(b, t, 1, s, s)

    def _split(self, frames: Tensor) -> dict[str, Tensor]:
        return {"inputs": frames[: self.input_frames], "targets": frames[self.input_frames:]}

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return self._split(self.generate([index])[0])

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Tensor]]:
        return [self._split(f) for f in self.generate(indices)]
