"""LS-DFN at the paper's settings: fast path (samples summed before the shared kernel) vs the
reference that materialises the unfolded s*s*k*k neighbourhood. U is given channels-last in
memory (as LSDFN computes it); ``fast_u_channels_first`` shows the cost of a channels-first U;
``fast_one_pass`` is the fast path without the CPU row tiles of the sample sum (the fast path before
issue 32's dispatch, see zoo.ops.lsdfn.lsdfn_window_rows)."""
from __future__ import annotations

import importlib
from typing import Any, Callable

import torch

from benchmarks._bench import Case
from zoo.ops.lsdfn import lsdfn, lsdfn_reference

_lsdfn_module = importlib.import_module("zoo.ops.lsdfn")  # zoo.ops.lsdfn is also the function's name


def _one_pass(*args: Any, **kwargs: Any) -> torch.Tensor:
    """The fast path as it was before the CPU row tiles (issue 32): the sample sum in one pass."""
    tile = _lsdfn_module._CPU_TILE_NUMEL
    _lsdfn_module._CPU_TILE_NUMEL = 2**62
    try:
        return lsdfn(*args, **kwargs)
    finally:
        _lsdfn_module._CPU_TILE_NUMEL = tile


def _setup(c: int, co: int, k: int, s: int, gamma: int, h: int, w: int) -> Callable[[], dict[str, Callable[[], Any]]]:
    def setup() -> dict[str, Callable[[], Any]]:
        g = torch.Generator().manual_seed(0)
        args = (
            torch.randn(1, c, h, w, generator=g),                 # features F
            # U (1, C', C, H, W) stored channels-last, the layout LSDFN's kernel branch produces
            0.05 * torch.randn(1, h, w, co, c, generator=g).permute(0, 3, 4, 1, 2),
            0.1 * torch.randn(1, co, k * k, h, w, generator=g),   # V
            0.1 * torch.randn(1, k * k, h, w, generator=g),       # position attention
            0.1 * torch.randn(1, s * s, h, w, generator=g),       # sample attention
        )
        u_first = (args[0], args[1].contiguous(), *args[2:])  # U channels-first: one transposing copy
        return {
            "fast": lambda: lsdfn(*args, sample_stride=gamma),
            "fast_one_pass": lambda: _one_pass(*args, sample_stride=gamma),
            "fast_u_channels_first": lambda: lsdfn(*u_first, sample_stride=gamma),
            "reference": lambda: lsdfn_reference(*args, sample_stride=gamma),
        }

    return setup


def _setup_train(b: int, c: int, co: int, k: int, s: int, gamma: int, h: int, w: int):
    """One training step of the op: forward and backward to every input (the hand-written backward
    of the fast path vs autograd through the reference)."""
    def setup() -> dict[str, Callable[[], Any]]:
        g = torch.Generator().manual_seed(0)
        args = [
            torch.randn(b, c, h, w, generator=g),
            0.05 * torch.randn(b, h, w, co, c, generator=g).permute(0, 3, 4, 1, 2),
            0.1 * torch.randn(b, co, k * k, h, w, generator=g),
            0.1 * torch.randn(b, k * k, h, w, generator=g),
            0.1 * torch.randn(b, s * s, h, w, generator=g),
        ]
        for t in args:
            t.requires_grad_()

        def step(fn: Callable[..., torch.Tensor]) -> Callable[[], None]:
            def run() -> None:
                with torch.enable_grad():
                    fn(*args, sample_stride=gamma).sum().backward()
            return run

        return {"fast": step(lsdfn), "reference": step(lsdfn_reference)}

    return setup


def cases() -> list[Case]:
    return [
        Case("lsdfn", "DeepLab: C=256 C'=24 k=3 s=5 gamma=3 1x41x41", _setup(256, 24, 3, 5, 3, 41, 41), repeats=3),
        Case("lsdfn", "FlowNet: C=256 C'=24 k=3 s=9 gamma=2 1x48x64", _setup(256, 24, 3, 9, 2, 48, 64), repeats=2),
        Case("lsdfn", "train step (fwd+bwd), flownets-lsdfn-small: C=64 C'=24 k=3 s=7 gamma=2 2x24x32",
             _setup_train(2, 64, 24, 3, 7, 2, 24, 32), repeats=2),
    ]
