"""``Digits``: scikit-learn's bundled handwritten digits as a 10-class image-classification dataset.

Data: ``sklearn.datasets.load_digits`` (UCI "Optical Recognition of Handwritten Digits": 1797 real
handwritten digits, 8 x 8 pixels, 17 grey levels 0..16, white strokes on black; shipped inside the
scikit-learn wheel, no download; ``pip install dynzoo[train]``). The same images :mod:`zoo.data.moving_digits`
animates.

Split (fixed, seeded, stratified): for each class in turn (0..9), that class's indices are shuffled by
one ``torch.Generator`` seeded with ``split_seed`` (0) and the first ``round(test_fraction x n_class)``
(20 %) go to ``"test"``, the rest to ``"train"``: 1438 train / 359 test images, every class in the same
proportion; ``"all"`` is all 1797. Indices stay in ascending order within a split. The split does not
depend on a training run's seed (a spec's ``seed`` is ignored), so train and test never overlap.
(MovingDigits' split, every fifth image, is not stratified: its test set holds 48 threes but 26 twos.)

Images: grey levels / 16 -> [0, 1], upsampled to ``size`` x ``size`` (32) by bilinear interpolation
(``align_corners=False``, as MovingDigits; the strokes become smooth, about 4 px per original pixel),
clamped to [0, 1] and replicated to 3 channels so RGB stems apply. Samples: ``{"id": "digits/<index in
load_digits>", "image": (3, size, size) float32 in [0, 1], "label": int}``; ``classes`` = "0".."9".
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["Digits", "digits_split", "DIGITS_SPLITS"]

DIGITS_SPLITS = ("train", "test", "all")


@functools.lru_cache(maxsize=1)
def _load() -> tuple[Tensor, Tensor]:
    """All 1797 images (N, 8, 8) in [0, 1] and labels (N,) int64."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("Digits needs scikit-learn's bundled digits: pip install 'dynzoo[train]' "
                          "(or pip install scikit-learn)") from exc
    raw = load_digits()
    return (torch.as_tensor(raw.images, dtype=torch.float32) / 16.0,
            torch.as_tensor(raw.target, dtype=torch.int64))


@functools.lru_cache(maxsize=8)
def digits_split(split: str = "train", test_fraction: float = 0.2, split_seed: int = 0) -> Tensor:
    """Indices (ascending, int64) into ``load_digits()`` of ``split`` (see the module docstring)."""
    if split not in DIGITS_SPLITS:
        raise ValueError(f"digits split must be one of {DIGITS_SPLITS}, got {split!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    labels = _load()[1]
    if split == "all":
        return torch.arange(labels.numel())
    g = torch.Generator().manual_seed(int(split_seed))
    test = []
    for c in range(int(labels.max()) + 1):
        members = torch.nonzero(labels == c).flatten()
        shuffled = members[torch.randperm(members.numel(), generator=g)]
        test.append(shuffled[: round(test_fraction * members.numel())])
    is_test = torch.zeros(labels.numel(), dtype=torch.bool)
    is_test[torch.cat(test)] = True
    return torch.nonzero(is_test if split == "test" else ~is_test).flatten()


class Digits(Dataset):
    """scikit-learn's handwritten digits, ``split`` "train" / "test" / "all", upsampled to ``size``
    (see the module docstring). ``len``: 1438 / 359 / 1797 with the default split."""

    classes = tuple(str(i) for i in range(10))

    def __init__(self, split: str = "train", *, size: int = 32, test_fraction: float = 0.2,
                 split_seed: int = 0) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.split, self.size = split, int(size)
        self.indices = digits_split(split, float(test_fraction), int(split_seed))
        images, labels = _load()
        grey = images[self.indices][:, None]
        if grey.shape[-1] != self.size:
            grey = F.interpolate(grey, size=(self.size, self.size), mode="bilinear", align_corners=False)
        self.images = grey[:, 0].clamp_(0, 1).contiguous()  # (N, size, size)
        self.labels = labels[self.indices].tolist()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for Digits({self.split!r}) of length {len(self)}")
        return {"id": f"digits/{int(self.indices[index])}", "image": self.images[index].expand(3, -1, -1).clone(),
                "label": self.labels[index]}
