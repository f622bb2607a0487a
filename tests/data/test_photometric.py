"""zoo.data.photometric: FlowNet's photometric jitter of flow pairs."""
from __future__ import annotations

import pytest
import torch

from zoo.data.photometric import photometric_jitter


def _pair(h: int = 37, w: int = 53) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, h, w, generator=g)
    return a, a.roll(3, dims=-1)


def test_strength_zero_is_identity():
    a, b = _pair()
    x, y = photometric_jitter(a, b, seed=1, strength=0.0)
    assert x is a and y is b


def test_seeded_in_range_and_shape_preserving():
    a, b = _pair()
    x1, y1 = photometric_jitter(a, b, seed=5)
    x2, y2 = photometric_jitter(a, b, seed=5)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert x1.shape == a.shape and 0 <= float(x1.min()) and float(y1.max()) <= 1
    changes = [float((photometric_jitter(a, b, seed=s)[0] - a).abs().mean()) for s in range(8)]
    assert len({round(c, 6) for c in changes}) == 8 and max(changes) > 0.05


def test_both_frames_get_the_same_appearance_change():
    # the same pixel values in both frames map to the same values up to the per-frame noise (sigma <= 0.04)
    a, b = _pair()
    for seed in range(6):
        x, y = photometric_jitter(a, b, seed=seed)
        shared = (x.roll(3, dims=-1) - y)[..., 3:]
        assert float(shared.abs().mean()) < 0.07
        assert float((x - a).abs().mean()) > float(shared.abs().mean()) / 10


def test_weaker_strength_changes_less():
    a, b = _pair()
    full = sum(float((photometric_jitter(a, b, seed=s)[0] - a).abs().mean()) for s in range(10))
    weak = sum(float((photometric_jitter(a, b, seed=s, strength=0.25)[0] - a).abs().mean()) for s in range(10))
    assert weak < full / 2


def test_bad_inputs_are_named():
    a, b = _pair()
    with pytest.raises(ValueError, match=r"two \(3, H, W\) frames"):
        photometric_jitter(a, b[:, :-1], seed=0)
    with pytest.raises(ValueError, match=r"two \(3, H, W\) frames"):
        photometric_jitter(a[None], b[None], seed=0)
    with pytest.raises(ValueError, match=r"strength must be in \[0, 1\]"):
        photometric_jitter(a, b, seed=0, strength=1.5)
