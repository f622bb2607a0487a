"""Interleave: item order, batched generation, the ``+`` spec and errors."""
from __future__ import annotations

import pytest
import torch

from zoo.data import FlyingShapes, Interleave, dataset_from_spec

SIZE = (32, 48)


def _pair() -> tuple[FlyingShapes, FlyingShapes]:
    return (FlyingShapes(length=6, size=SIZE, seed=1, textures="procedural"),
            FlyingShapes(length=9, size=SIZE, seed=2, textures="procedural", object_motion=(0.15, 0.1, 0.4)))


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_items_alternate_and_length_is_k_times_the_shortest():
    a, b = _pair()
    mix = Interleave([a, b])
    assert len(mix) == 12
    for i in (0, 1, 2, 7, 11):
        assert _equal(mix[i], (a, b)[i % 2][i // 2]), i


def test_generate_matches_items_in_any_order():
    mix = Interleave(list(_pair()))
    indices = [5, 0, 3, 2, 2, 11]
    batch = mix.generate(indices)
    for row, i in enumerate(indices):
        assert _equal({k: v[row] for k, v in batch.items()}, mix[i]), i
    assert all(_equal(x, mix[i]) for x, i in zip(mix.__getitems__(indices), indices))


def test_generate_only_when_every_dataset_has_it():
    a, _ = _pair()
    plain = Interleave([a, [{"image": torch.zeros(1)}] * 3])
    assert not hasattr(plain, "generate") and len(plain) == 6
    assert torch.equal(plain[1]["image"], torch.zeros(1))


def test_spec_with_plus_builds_an_interleave_with_seed_offsets():
    mix = dataset_from_spec("flying-shapes:10+flying-shapes:20?object_motion=0.15,0.1,0.4", size=SIZE, seed=7,
                            textures="procedural")
    assert isinstance(mix, Interleave) and len(mix) == 20
    first, second = mix.datasets
    assert (first.seed, second.seed) == (7, 8)
    assert second.object_motion == (0.15, 0.1, 0.4) and first.object_motion != second.object_motion
    assert not isinstance(dataset_from_spec("flying-shapes?object_motion=0.15,0.1,1e+0", size=SIZE,
                                            textures="procedural"), Interleave)


def test_errors_name_the_problem():
    a, b = _pair()
    with pytest.raises(ValueError, match="at least 2"):
        Interleave([a])
    with pytest.raises(IndexError, match="out of range for Interleave of length 12"):
        Interleave([a, b])[12]
    with pytest.raises(ValueError, match="unknown dataset spec"):
        dataset_from_spec("flying-shapes+nothing:x")
