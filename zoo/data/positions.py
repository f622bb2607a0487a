"""Training data addressed by sample position (see :mod:`zoo.training`, "Data order and exact resume").

Sample position ``p = step * batch + j`` is rendered (procedural datasets) or read from a per-epoch
permutation seeded by (seed, epoch) and randomly cropped at an offset seeded by (seed, p), so the data a
run reads is a function of the step number alone. Task-specific streams (augmentation, labels) subclass
:class:`PositionStream` in their task module (:mod:`zoo.tasks`).
"""
from __future__ import annotations

import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from zoo.data.shapes import sample_seed

__all__ = ["PositionStream", "StepBatchSampler", "collate"]


class PositionStream(Dataset):
    """Sample position p -> sample. Procedural datasets (with ``generate``) render index p directly;
    finite datasets read permutation_epoch[p mod n] (epoch = p // n, permutation seeded by (seed, epoch))
    and are randomly cropped (offset seeded by (seed, p)) to ``size``; labels pad with 255."""

    def __init__(self, base: Dataset, seed: int, size: tuple[int, int] | None) -> None:
        self.base, self.seed, self.size = base, seed, size
        self.procedural = hasattr(base, "generate")
        self._perm: tuple[int, list[int]] | None = None

    def __len__(self) -> int:
        return 2**62

    def index(self, p: int) -> int:
        n = len(self.base)
        if self.procedural:
            return p % n
        epoch = p // n
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(sample_seed(self.seed, -1 - epoch))
            self._perm = (epoch, torch.randperm(n, generator=g).tolist())
        return self._perm[1][p % n]

    def _crop(self, sample: dict, p: int) -> dict:
        if self.size is None:
            return sample
        th, tw = self.size
        key = "image1" if "image1" in sample else "image"
        h, w = sample[key].shape[-2:]
        if (h, w) == (th, tw):
            return sample
        ph, pw = max(th - h, 0), max(tw - w, 0)
        out = {}
        for k, v in sample.items():
            if not isinstance(v, torch.Tensor):
                continue
            if ph or pw:
                fill = 255 if k == "label" else (False if v.dtype == torch.bool else 0)
                v = F.pad(v.unsqueeze(0) if v.dim() == 2 else v, (0, pw, 0, ph), value=fill)
                v = v[0] if k in ("label", "valid", "visible") else v
            out[k] = v
        rng = random.Random(sample_seed(self.seed, p))
        top, left = rng.randint(0, h + ph - th), rng.randint(0, w + pw - tw)
        return {k: v[..., top:top + th, left:left + tw] for k, v in out.items()}

    def __getitem__(self, p: int) -> dict:
        return self._crop(self.base[self.index(p)], p)

    def __getitems__(self, positions: Sequence[int]) -> list[dict]:
        if self.procedural:
            return self.base.__getitems__([self.index(p) for p in positions])
        return [self[p] for p in positions]


def collate(samples: list[dict]) -> dict:
    """Stack the tensor fields of ``samples`` into one batch (non-tensor fields are dropped)."""
    return {k: torch.stack([s[k] for s in samples]) for k, v in samples[0].items() if isinstance(v, torch.Tensor)}


class StepBatchSampler(Sampler):
    """Per-rank lists of sample positions for steps ``start .. steps - 1`` (sample ``p = step * batch + j`` is rank ``j // (batch / world)``'s)."""

    def __init__(self, start: int, steps: int, batch_size: int, rank: int, world: int) -> None:
        if batch_size % world:
            raise ValueError(f"the global batch size {batch_size} must be divisible by the {world} processes")
        self.start, self.steps, self.batch, self.rank, self.local = start, steps, batch_size, rank, batch_size // world

    def __len__(self) -> int:
        return max(self.steps - self.start, 0)

    def __iter__(self):
        for step in range(self.start, self.steps):
            base = step * self.batch + self.rank * self.local
            yield list(range(base, base + self.local))
