"""The few ``torch.distributed`` helpers evaluation and training share (single process when not initialised)."""
from __future__ import annotations

import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless a process group is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_lists(items: list) -> list:
    """The concatenation, in rank order, of every rank's ``items`` (``items`` itself in one process)."""
    _, world = rank_and_world()
    if world == 1:
        return items
    out: list = [None] * world
    dist.all_gather_object(out, items)
    return [x for part in out for x in part]


def rank_indices(n: int, max_samples: int | None = None) -> list[int]:
    """This rank's share ``rank, rank + world, ...`` of the first ``min(n, max_samples)`` sample indices."""
    n = n if max_samples is None else min(n, max_samples)
    rank, world = rank_and_world()
    return list(range(rank, n, world))
