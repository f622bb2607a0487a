"""Input checks shared by operators, layers, models and tasks (kornia-style named shapes, clear messages).

All checks read only shapes and dtypes (metadata), so they cost nothing on the GPU, cause no host
sync and are traced away by torch.compile / torch.export.
"""
from __future__ import annotations

import torch

from zoo.errors import InputError

__all__ = ["check_floating", "check_same", "check_shape"]


def check_shape(x: torch.Tensor, dims: str, name: str = "input", **expected: int) -> dict[str, int]:
    """Check that ``x`` has the named dimensions ``dims`` (e.g. ``"B,C,H,W"``).

    Keyword arguments pin sizes (``C=256``). Returns the sizes by name. Raises :class:`InputError`
    naming the tensor, the expected layout and what was given.
    """
    names = [d.strip() for d in dims.split(",")]
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor of shape ({dims}), got {type(x).__name__}")
    if x.dim() != len(names):
        raise InputError(
            f"{name} must have shape ({dims}) ({len(names)} dims), got {tuple(x.shape)}; "
            + ("add a batch dimension with x.unsqueeze(0)" if x.dim() == len(names) - 1 else "reshape it")
        )
    sizes = dict(zip(names, x.shape))
    for key, want in expected.items():
        if want is not None and sizes.get(key) != want:
            raise InputError(f"{name} must have {key}={want} in shape ({dims}), got {tuple(x.shape)}")
    return sizes


def check_floating(x: torch.Tensor, name: str = "input") -> None:
    if not x.is_floating_point():
        raise InputError(f"{name} must be a floating-point tensor, got {x.dtype}; convert it with x.float()")


def check_same(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.device != b.device or a.dtype != b.dtype:
        raise InputError(
            f"{what}: tensors must share device and dtype, got {a.device}/{a.dtype} and {b.device}/{b.dtype}"
        )
