"""Shared benchmark machinery: timing, peak memory, JSON out.

A :class:`Case` names one operator setting and the implementations to compare. Each implementation is
a zero-argument callable returned by ``setup()`` so that input creation is not timed.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Callable

import torch


@dataclasses.dataclass
class Case:
    op: str                      # operator name as exported by zoo.ops
    setting: str                 # human-readable setting, e.g. "s=5 gamma=3 k=3 C=256 41x41"
    setup: Callable[[], dict[str, Callable[[], Any]]]  # -> {"fast": fn, "reference": fn, "<outside>": fn}
    baseline: str = "reference"  # which implementation the ratio is taken against
    repeats: int = 5


def time_ms(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in milliseconds (no grad)."""
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)
