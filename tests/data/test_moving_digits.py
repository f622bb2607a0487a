"""zoo.data.moving_digits: real-digit Moving-MNIST sequences (scikit-learn's bundled digits)."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("sklearn")

from zoo.data.moving_digits import MovingDigits, load_digit_images  # noqa: E402


def test_digits_are_real_and_upscaled():
    train, test = load_digit_images("train"), load_digit_images("test")
    assert train.shape == (1437, 28, 28) and test.shape == (360, 28, 28)
    assert float(train.min()) >= 0 and float(train.max()) <= 1
    assert float(train.max()) > 0.9  # ink reaches the top grey level
    with pytest.raises(ValueError):
        load_digit_images("val")


def test_shapes_range_and_split():
    ds = MovingDigits(8, seed=0)
    sample = ds[3]
    assert sample["inputs"].shape == (10, 1, 64, 64) and sample["targets"].shape == (10, 1, 64, 64)
    frames = torch.cat([sample["inputs"], sample["targets"]])
    assert float(frames.min()) == 0.0 and float(frames.max()) <= 1.0
    assert (frames.flatten(1).amax(1) > 0.5).all()  # every frame shows ink


def test_seeded_deterministic_and_batch_equals_single():
    a, b = MovingDigits(10, seed=7), MovingDigits(10, seed=7)
    torch.testing.assert_close(a[4]["inputs"], b[4]["inputs"], rtol=0, atol=0)
    batch = a.__getitems__([1, 4])
    torch.testing.assert_close(batch[1]["targets"], a[4]["targets"], rtol=0, atol=0)
    assert not torch.equal(a[1]["inputs"], a[4]["inputs"])
    assert not torch.equal(MovingDigits(10, seed=8)[4]["inputs"], a[4]["inputs"])


def test_single_digit_moves_at_speed_and_bounces():
    ds = MovingDigits(1, seed=0, num_digits=1, num_frames=40, input_frames=10, speed=3.0)
    frames = ds.generate([0])[0, :, 0]  # (T, 64, 64)
    ys, xs = [], []
    for f in frames:  # centre of mass of the ink
        w = f / f.sum()
        ys.append(float((w.sum(1) * torch.arange(64.0)).sum()))
        xs.append(float((w.sum(0) * torch.arange(64.0)).sum()))
    steps = [((ys[i + 1] - ys[i]) ** 2 + (xs[i + 1] - xs[i]) ** 2) ** 0.5 for i in range(39)]
    assert max(steps) <= 3.0 + 1.5  # at most one pixel of flooring per axis
    # the digit stays inside the frame and, over 40 frames * 3 px > 2 * 36 px, turns around somewhere
    dx = [xs[i + 1] - xs[i] for i in range(39)]
    dy = [ys[i + 1] - ys[i] for i in range(39)]
    flipped = any(a * b < -0.5 for a, b in zip(dx, dx[1:])) or any(a * b < -0.5 for a, b in zip(dy, dy[1:]))
    assert flipped


def test_bad_arguments():
    with pytest.raises(ValueError):
        MovingDigits(1, digit_size=80)
    with pytest.raises(ValueError):
        MovingDigits(1, input_frames=20)
    with pytest.raises(IndexError):
        MovingDigits(2)[2]



def test_dataset_spec():
    from zoo.data import dataset_from_spec

    test = dataset_from_spec("moving-digits:5")
    assert isinstance(test, MovingDigits) and len(test) == 5 and test.split == "test" and test.size == 64
    train = dataset_from_spec("moving-digits", split="train", size=(32, 32), seed=3)
    assert len(train) == 10000 and train.split == "train" and train.size == 32 and train.seed == 3
    assert dataset_from_spec("moving-digits:2@train").split == "train"
    one = dataset_from_spec("moving-digits:2@test?num_digits=1&speed=2")
    assert one.num_digits == 1 and one.speed == 2.0 and one.split == "test"
    with pytest.raises(ValueError, match="square"):
        dataset_from_spec("moving-digits:2", size=(32, 48))
    with pytest.raises(ValueError, match="split"):
        dataset_from_spec("moving-digits:2@val")
