"""Photometric augmentation of image pairs for optical-flow training (FlowNet, Dosovitskiy et al.
2015, Sec. 5.2: "additive Gaussian noise, changes in brightness, contrast, gamma, and color").

FlowNet's ranges, applied identically to both frames (the flow stays exact): contrast c ~ U(-0.8, 0.4)
(``x -> (x - mean) * (1 + c) + mean``, mean over the pair's pixels and channels), per-channel colour
gains ~ U(0.5, 2), gamma ~ U(0.7, 1.5), additive brightness ~ N(0, 0.2), clamped to [0, 1] after each
step; then Gaussian noise with sigma ~ U(0, 0.04), drawn independently for each frame. FlowNet also
perturbed the second frame relative to the first; that is left out here because real FlyingChairs
pairs (the evaluation target) have identical lighting in both frames. ``strength`` scales every range
about its identity value (0 = no change, 1 = FlowNet's).
"""
from __future__ import annotations

import random

import torch


def photometric_jitter(image1: torch.Tensor, image2: torch.Tensor, seed: int,
                       strength: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Jitter one pair, deterministically for ``seed``.

    Args:
        image1, image2: (3, H, W) float in [0, 1].
        seed: seeds both the Python draws (scalars) and the noise generator.
        strength: scale of the ranges in [0, 1]; 0 returns the inputs unchanged.
    Returns:
        The two jittered frames, (3, H, W) in [0, 1].
    """
    if image1.shape != image2.shape or image1.dim() != 3 or image1.shape[0] != 3:
        raise ValueError(f"photometric_jitter expects two (3, H, W) frames of one shape, got "
                         f"{tuple(image1.shape)} and {tuple(image2.shape)}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if strength == 0.0:
        return image1, image2
    rng = random.Random(seed)
    s = strength
    contrast = 1.0 + s * rng.uniform(-0.8, 0.4)
    gains = torch.tensor([1.0 + s * (rng.uniform(0.5, 2.0) - 1.0) for _ in range(3)],
                         dtype=image1.dtype, device=image1.device).view(3, 1, 1)
    gamma = 1.0 + s * (rng.uniform(0.7, 1.5) - 1.0)
    brightness = s * rng.gauss(0.0, 0.2)
    sigma = s * rng.uniform(0.0, 0.04)

    pair = torch.stack([image1, image2])
    mean = pair.mean()
    pair = ((pair - mean) * contrast + mean).clamp(0, 1)
    pair = (pair * gains).clamp(0, 1)
    pair = pair.pow(gamma)
    pair = (pair + brightness).clamp(0, 1)
    if sigma > 0:
        g = torch.Generator(device=image1.device).manual_seed(seed)
        noise = torch.randn(pair.shape, generator=g, dtype=pair.dtype, device=pair.device)
        pair = (pair + sigma * noise).clamp(0, 1)
    return pair[0], pair[1]
