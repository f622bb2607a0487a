"""Random checkpoints in an original layout, for the converter tests."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def random_state_dict(shapes: Mapping[str, Sequence[int]], seed: int = 0, *, scale: float = 0.1,
                      batches: int = 80000, positive: Sequence[str] = (), cheap_above: int | None = None
                      ) -> dict[str, torch.Tensor]:
    """``key -> shape`` to plausible tensors: ``num_batches_tracked`` = ``batches``, ``running_var`` and keys
    ending in one of ``positive`` uniform in [0.5, 1.5), tensors larger than ``cheap_above`` elements filled
    with 0.01 (fast for huge fc layers), everything else N(0, scale^2)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(batches)
        elif key.endswith("running_var") or any(key.endswith(p) for p in positive):
            out[key] = torch.rand(shape, generator=g) + 0.5
        elif cheap_above is not None and torch.Size(shape).numel() > cheap_above:
            out[key] = torch.full(tuple(shape), 0.01)
        else:
            out[key] = torch.randn(shape, generator=g) * scale
    return out
