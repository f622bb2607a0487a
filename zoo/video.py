"""Video-prediction utilities: the binary cross-entropy of predicted frames, per pixel and per image.

Frames are (B, T, 1, H, W) tensors in [0, 1]: ``pred`` probabilities (a model's output), ``target`` the
true future frames (Moving MNIST's grey frames are treated as Bernoulli targets, as in the DFN paper).
``bce_per_image`` is the DFN paper's loss and Moving MNIST metric ("BCE per image": summed over the
pixels of a frame, averaged over frames and sequences; 282.3 in the paper at 64 x 64);
``bce_per_pixel`` is the same divided by the pixels of a frame. ``torch.nn.functional.binary_cross_entropy``
clamps its log terms at -100, so a certain wrong pixel costs 100, not infinity (the copy-last-frame
baseline predicts exact 0 and 1). Shared by :mod:`zoo.models.dfn` (its loss) and
:mod:`zoo.tasks.video_prediction` (training and evaluation).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["frame_bce", "bce_per_image", "bce_per_pixel"]


def frame_bce(pred: Tensor, target: Tensor) -> Tensor:
    """BCE summed over each frame's pixels: (B, T, ...) -> (B, T)."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    return F.binary_cross_entropy(pred, target.to(pred.dtype), reduction="none").flatten(2).sum(-1)


def bce_per_image(pred: Tensor, target: Tensor) -> Tensor:
    """BCE summed over each frame's pixels, averaged over frames and batch (a scalar)."""
    return frame_bce(pred, target).mean()


def bce_per_pixel(pred: Tensor, target: Tensor) -> Tensor:
    """BCE averaged over every pixel of every frame (a scalar)."""
    return bce_per_image(pred, target) / pred[0, 0].numel()
