"""zoo.data.digits: scikit-learn's real handwritten digits as a classification dataset, its fixed
stratified split and the ``digits`` dataset spec."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

sklearn_datasets = pytest.importorskip("sklearn.datasets")

from zoo.data import Digits, dataset_from_spec  # noqa: E402
from zoo.data.digits import digits_split  # noqa: E402


def test_split_is_fixed_disjoint_and_stratified():
    labels = torch.as_tensor(sklearn_datasets.load_digits().target)
    train, test, every = digits_split("train"), digits_split("test"), digits_split("all")
    assert (len(train), len(test), len(every)) == (1438, 359, 1797)
    assert torch.equal(torch.cat([train, test]).sort().values, every)
    assert torch.equal(train, train.sort().values) and torch.equal(test, test.sort().values)
    for c in range(10):
        n = int((labels == c).sum())
        assert int((labels[test] == c).sum()) == round(0.2 * n)
    assert torch.equal(digits_split("test"), test)                       # fixed (cached or recomputed alike)
    assert not torch.equal(digits_split("test", 0.2, 1), test)           # the split seed matters
    assert len(digits_split("test", 0.5, 0)) > 800


def test_samples_are_the_upsampled_real_digits():
    raw = sklearn_datasets.load_digits()
    ds = Digits("test")
    assert len(ds) == 359 and ds.num_classes == 10 and ds.classes[3] == "3"
    s = ds[5]
    index = int(s["id"].split("/")[1])
    assert isinstance(s["label"], int) and s["label"] == int(raw.target[index])
    assert s["image"].shape == (3, 32, 32) and s["image"].dtype == torch.float32
    assert torch.equal(s["image"][0], s["image"][1]) and torch.equal(s["image"][0], s["image"][2])
    grey = torch.as_tensor(raw.images[index], dtype=torch.float32)[None, None] / 16
    expected = F.interpolate(grey, size=(32, 32), mode="bilinear", align_corners=False)[0, 0].clamp(0, 1)
    torch.testing.assert_close(s["image"][0], expected, rtol=0, atol=0)
    native = Digits("train", size=8)[0]
    assert torch.equal(native["image"][0] * 16, torch.as_tensor(raw.images[0], dtype=torch.float32))
    assert float(ds.images.min()) >= 0 and float(ds.images.max()) <= 1


def test_spec_and_errors():
    assert len(dataset_from_spec("digits@test")) == 359 and len(dataset_from_spec("digits@all")) == 1797
    assert len(dataset_from_spec("digits", split="train", size=(64, 64), seed=5)) == 1438
    assert len(dataset_from_spec("digits", split="val")) == 359 and len(dataset_from_spec("digits")) == 359
    with pytest.raises(ValueError, match="split"):
        dataset_from_spec("digits@val")
    with pytest.raises(ValueError, match="test_fraction"):
        Digits("train", test_fraction=1.0)
    with pytest.raises(IndexError):
        Digits("test")[359]
