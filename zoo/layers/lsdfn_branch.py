"""The LS-DFN branch that DeepLab v2 (on res5b) and R-FCN (on conv5) add beside their last stage."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from zoo.ops.lsdfn import LSDFN

__all__ = ["LSDFNBranch"]


class LSDFNBranch(nn.Module):
    """LS-DFN on res5b for DeepLab v2 (Wu et al., ECCV 2018, arXiv 1803.07624, seed 000).

    The seed gives C' = 24, s = 5, gamma = 3, k = 3 and "a 1x1 256-channel post-conv layer with shared
    weights at all three input scales", but not where that conv sits. An LS-DFN reading res5b's 2048
    channels directly would need a kernel branch of C' x 2048 = 49,152 channels per position, so we read
    it as the 1x1 conv (+ ReLU) that brings res5b to C = 256 channels for the LS-DFN (the C the paper's
    setting implies). Like every layer of the multi-scale DeepLab v2, it is shared by the three scales.
    (B, in_channels, h, w) -> (B, out_channels, h, w); ``reduce_channels`` and the LS-DFN arguments are
    constructor arguments.
    """

    def __init__(self, in_channels: int, *, out_channels: int = 24, reduce_channels: int = 256, kernel_size: int = 3,
                 samples_per_side: int = 5, sample_stride: int = 3, **lsdfn_args) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.reduce = nn.Conv2d(in_channels, reduce_channels, 1)
        self.lsdfn = LSDFN(reduce_channels, out_channels, kernel_size, samples_per_side, sample_stride, **lsdfn_args)

    def forward(self, x: Tensor) -> Tensor:
        return self.lsdfn(torch.relu(self.reduce(x)))
