"""Dynamic Filter Network for video prediction on Moving MNIST (De Brabandere, Jia, Tuytelaars, Van Gool).

Paper: "Dynamic Filter Networks", NIPS 2016, https://arxiv.org/abs/1605.09673. Reference code:
dbbert/dfn (Theano/Lasagne) ``models/model_bouncingMnistOriginal.py`` with
``experiment_bouncingMnistOriginal.py`` (10 input frames, 10 predicted, 64 x 64, 9 x 9 filters,
buffer of one frame, BCE loss). No official weights exist.

One step (the same weights at every step): the current frame (B, 1, H, W) goes through the
filter-generating network,

- encoder: conv3x3 1->w, conv3x3 w->w stride 2, conv3x3 w->2w, conv3x3 2w->2w;
- middle: conv3x3 2w->4w, plus a recurrent path on the hidden state: conv3x3 4w->4w, conv3x3 4w->4w;
  their SUM is the new hidden state (B, 4w, H/2, W/2; zeros before the first frame);
- decoder: conv3x3 4w->2w, conv3x3 2w->2w, nearest x2 upsampling, conv3x3 2w->2w, conv3x3 2w->2w,
  conv1x1 2w->4w;
- ``filters``: conv1x1 4w -> 81 (no activation);

every conv but the last is followed by LeakyReLU(0.01) (Lasagne's ``leaky_rectify``); w = 32 in the
paper (0.64 M parameters). The 81 channels are softmax-normalised over the taps and applied to the
current frame by :func:`zoo.ops.dynamic_filter.dynamic_local_filter` (9 x 9, zero padding): the
prediction of the next frame, a convex combination of input pixels, stays in [0, 1].

Sequence (as the reference, ``buffer_len = 1``): the 10 observed frames are fed one by one (the
predictions for frames 2..10 are discarded, they only update the hidden state); from the 10th frame
on, each prediction is fed back as the next input (autoregressive), giving frames 11..20.

Input (B, T_in, 1, H, W) in [0, 1] (``video-frames`` transforms), H and W even; output
(B, T_out, 1, H, W) probabilities in [0, 1] in training AND eval mode. Loss: :func:`dfn_loss`
(binary cross-entropy summed over the pixels of a frame, averaged over frames and batch: the
"BCE per image" the reference reports, 282.3 on Moving MNIST). Initialisation: He-uniform weights,
zero biases (Lasagne ``HeUniform()``, gain 1: U(+-sqrt(3 / fan_in))).

Interpretation choices: the reference's optional dynamic bias and refinement network are off in its
Moving MNIST experiment and are not implemented.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.archs import register_arch
from zoo.ops._checks import check_shape
from zoo.ops.dynamic_filter import dynamic_local_filter
from zoo.video import bce_per_image

__all__ = ["DFNVideo", "ConvVideo", "dfn_loss", "dfn_video", "conv_video"]


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, padding=k // 2)


class DFNVideo(nn.Module):
    """DFN video predictor: frames (B, T_in, 1, H, W) -> predictions (B, T_out, 1, H, W).

    Args: in_frames (10), out_frames (10), filter_size (9, odd), width (32 = the paper's w).
    """

    def __init__(self, in_frames: int = 10, out_frames: int = 10, filter_size: int = 9, width: int = 32) -> None:
        super().__init__()
        if filter_size < 1 or filter_size % 2 == 0:
            raise ValueError(f"filter_size must be a positive odd integer, got {filter_size}")
        if in_frames < 1 or out_frames < 1 or width < 1:
            raise ValueError(f"in_frames, out_frames and width must be >= 1, got {in_frames}, {out_frames}, {width}")
        self.in_frames, self.out_frames, self.filter_size, self.width = in_frames, out_frames, filter_size, width
        w = width
        self.encoder = nn.ModuleList([_conv(1, w), _conv(w, w, stride=2), _conv(w, 2 * w), _conv(2 * w, 2 * w)])
        self.mid = _conv(2 * w, 4 * w)
        self.hidden = nn.ModuleList([_conv(4 * w, 4 * w), _conv(4 * w, 4 * w)])
        self.decoder1 = nn.ModuleList([_conv(4 * w, 2 * w), _conv(2 * w, 2 * w)])
        self.decoder2 = nn.ModuleList([_conv(2 * w, 2 * w), _conv(2 * w, 2 * w), _conv(2 * w, 4 * w, 1)])
        self.filters = _conv(4 * w, filter_size * filter_size, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # Lasagne HeUniform (gain 1): std sqrt(1/fan_in), U(+-sqrt(3/fan_in))
                bound = math.sqrt(3.0 / (m.in_channels * m.kernel_size[0] * m.kernel_size[1]))
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def features(self, frame: Tensor, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder, recurrence and decoder: frame (B, 1, H, W), hidden -> (decoder features (B, 4w, H, W), new hidden)."""
        act = lambda t: F.leaky_relu(t, 0.01)  # noqa: E731
        x = frame
        for conv in self.encoder:
            x = act(conv(x))
        x = act(self.mid(x))
        h = hidden
        for conv in self.hidden:
            h = act(conv(h))
        hidden = x + h
        x = hidden
        for conv in self.decoder1:
            x = act(conv(x))
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        for conv in self.decoder2:
            x = act(conv(x))
        return x, hidden

    def step(self, frame: Tensor, hidden: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One step: frame (B, 1, H, W), hidden (B, 4w, H/2, W/2) -> (next frame, new hidden, filter logits)."""
        x, hidden = self.features(frame, hidden)
        logits = self.filters(x)
        return dynamic_local_filter(frame, logits, self.filter_size, softmax=True), hidden, logits

    def forward(self, frames: Tensor) -> Tensor:
        s = check_shape(frames, "B,T,C,H,W", "frames", T=self.in_frames, C=1)
        if s["H"] % 2 or s["W"] % 2:
            raise ValueError(f"frames need an even height and width, got {s['H']} x {s['W']}")
        hidden = frames.new_zeros(s["B"], 4 * self.width, s["H"] // 2, s["W"] // 2)
        for t in range(self.in_frames - 1):  # warm-up: predictions discarded
            _, hidden, _ = self.step(frames[:, t], hidden)
        current = frames[:, -1]
        outputs = []
        for _ in range(self.out_frames):
            current, hidden, _ = self.step(current, hidden)
            outputs.append(current)
        return torch.stack(outputs, dim=1)


def dfn_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy per image: summed over each frame's pixels, averaged over frames and batch.

    pred (B, T, 1, H, W) probabilities in [0, 1] (the model's output), target same shape in [0, 1]
    (:func:`zoo.video.bce_per_image`).
    """
    return bce_per_image(pred, target)


@register_arch("dfn_video")
def dfn_video(*, in_frames: int = 10, out_frames: int = 10, filter_size: int = 9, width: int = 32) -> DFNVideo:
    """DFN video prediction network (Moving MNIST setup by default) with random init."""
    return DFNVideo(in_frames, out_frames, filter_size, width)


class ConvVideo(DFNVideo):
    """The plain twin of :class:`DFNVideo`: the same encoder, recurrence and decoder, but the last layer
    (``frame``: conv1x1 4w -> 1, then a sigmoid) outputs the next frame directly instead of 81 filter taps.

    Same sequence handling (warm-up on the observed frames, then autoregressive), initialisation and
    output range (probabilities in (0, 1)); only the head differs, so it has 80 x (4w + 1) parameters
    fewer than the DFN of the same width (3.2 % of 162,305 at w = 16). ``step`` returns ``None`` for the
    filter logits. It answers: how much of the DFN's result is the dynamic filtering, at equal size and
    training budget?
    """

    def __init__(self, in_frames: int = 10, out_frames: int = 10, width: int = 32) -> None:
        super().__init__(in_frames, out_frames, 1, width)
        del self.filters
        self.frame = _conv(4 * width, 1, 1)
        self.reset_parameters()

    def step(self, frame: Tensor, hidden: Tensor) -> tuple[Tensor, Tensor, None]:
        """One step: frame (B, 1, H, W), hidden (B, 4w, H/2, W/2) -> (next frame, new hidden, None)."""
        x, hidden = self.features(frame, hidden)
        return torch.sigmoid(self.frame(x)), hidden, None


@register_arch("conv_video")
def conv_video(*, in_frames: int = 10, out_frames: int = 10, width: int = 32) -> ConvVideo:
    """The plain-convolution twin of ``dfn_video`` (same network, direct sigmoid output) with random init."""
    return ConvVideo(in_frames, out_frames, width)
