"""Interleave: several datasets read in turn, as one (a mixture of training distributions).

Item ``i`` is item ``i // k`` of dataset ``i % k`` (``k`` datasets), so every batch of ``k`` consecutive
positions holds one sample of each and the mixture is exactly 1 : 1 : ... at any batch size that is a
multiple of ``k``. The length is ``k`` times the shortest dataset's. When every dataset renders batches
(``generate``, as :class:`~zoo.data.FlyingShapes` does) the interleave does too, one vectorised call per
dataset.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset


class Interleave(Dataset):
    """Datasets read in turn: item i -> ``datasets[i % k][i // k]``. Samples must share keys (and, for
    batched ``generate``, shapes)."""

    def __init__(self, datasets: Sequence[Dataset]) -> None:
        if len(datasets) < 2:
            raise ValueError(f"Interleave needs at least 2 datasets, got {len(datasets)}")
        self.datasets = list(datasets)
        if all(hasattr(d, "generate") for d in self.datasets):
            self.generate = self._generate

    def __len__(self) -> int:
        return len(self.datasets) * min(len(d) for d in self.datasets)

    def _locate(self, index: int) -> tuple[int, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for Interleave of length {len(self)}")
        k = len(self.datasets)
        return index % k, index // k

    def __getitem__(self, index: int) -> dict:
        which, inner = self._locate(int(index))
        return self.datasets[which][inner]

    def _generate(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """A batch for ``indices`` (same keys and layout as the datasets' own ``generate``)."""
        located = [self._locate(int(i)) for i in indices]
        parts, order = [], []
        for which, dataset in enumerate(self.datasets):
            rows = [row for row, (w, _) in enumerate(located) if w == which]
            if rows:
                parts.append(dataset.generate([located[row][1] for row in rows]))
                order += rows
        batch = {key: torch.cat([part[key] for part in parts]) for key in parts[0]}
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(order))
        return {key: value[inverse] for key, value in batch.items()}

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        if hasattr(self, "generate"):
            batch = self.generate(indices)
            return [{k: v[i] for k, v in batch.items()} for i in range(len(indices))]
        return [self[i] for i in indices]
