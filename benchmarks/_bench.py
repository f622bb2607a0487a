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


CLOCKS: dict[str, Callable[[], float]] = {
    "wall": time.perf_counter,
    # CPU time of the calling thread: with one intra-op thread all of torch's work runs on it, and time
    # spent waiting for a core on a loaded machine is not counted (cache contention still is).
    "cpu": time.thread_time,
}


def time_ms(fn: Callable[[], Any], repeats: int, warmup: int = 1, clock: str = "wall") -> float:
    """Median time of ``fn()`` in milliseconds (no grad) on ``clock`` ("wall" or "cpu", see CLOCKS)."""
    now = CLOCKS[clock]
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        samples = []
        for _ in range(repeats):
            start = now()
            fn()
            samples.append((now() - start) * 1e3)
    return statistics.median(samples)


def interleaved_ms(fns: dict[str, Callable[[], Any]], rounds: int, clock: str = "cpu") -> dict[str, float]:
    """Median time in ms of each of ``fns`` (no grad), measured round-robin in one process so that a
    change of machine load hits every implementation alike; one warm-up call each."""
    now = CLOCKS[clock]
    samples: dict[str, list[float]] = {name: [] for name in fns}
    with torch.no_grad():
        for fn in fns.values():
            fn()
        for _ in range(rounds):
            for name, fn in fns.items():
                start = now()
                fn()
                samples[name].append((now() - start) * 1e3)
    return {name: statistics.median(s) for name, s in samples.items()}
