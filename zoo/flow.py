"""Optical flow utilities: ``.flo`` files, metrics, colour coding and flow resizing.

Conventions: a flow field is a (B, 2, H, W) tensor (channel 0 = u, horizontal displacement in pixels,
positive to the right; channel 1 = v, vertical, positive downwards) that maps a pixel of the first
frame to its position in the second. Ground truth values with ``|u|`` or ``|v|`` >= 1e9 (or not
finite) mark unknown flow (Middlebury / FlyingChairs ``.flo`` convention) and are excluded from every
metric.

- :func:`read_flo` / :func:`write_flo`: Middlebury ``.flo`` files (float32 magic 202021.25, int32
  width, int32 height, then H*W*2 float32 (u, v) interleaved, all little-endian).
- :func:`flow_to_color`: Middlebury colour coding (Baker et al., "A Database and Evaluation Methodology
  for Optical Flow", IJCV 2011; 55-colour wheel RY 15, YG 6, GC 4, CB 11, BM 13, MR 6).
- :func:`epe`, :func:`outlier_rate`: end-point error and the KITTI Fl outlier rate.
- :func:`padded_size`, :func:`resize_flow`: the padded network input size of a pair, and bilinear
  resizing of a flow field with its vectors scaled (FlowNet's outputs, the ``optical-flow`` postprocess).

The ``optical-flow`` task (presets, evaluation, training, ``zoo predict``) is :mod:`zoo.tasks.optical_flow`;
this module is what datasets, models and that task share. Everything here reads only shapes and dtypes
(no ``.item()``, no host sync) and runs on any device; file I/O is the only part that touches the host.
"""
from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from zoo.io import write_atomic
from zoo.errors import InputError
from zoo.checks import check_floating, check_shape

__all__ = [
    "FLO_MAGIC", "UNKNOWN_FLOW", "read_flo", "write_flo", "valid_flow_mask", "flow_to_color", "epe",
    "outlier_rate", "padded_size", "resize_flow",
]

FLO_MAGIC = 202021.25
UNKNOWN_FLOW = 1e9


# ----------------------------------------------------------------------------------------- files
def read_flo(path: str | Path) -> torch.Tensor:
    """A Middlebury ``.flo`` file as a float32 (2, H, W) tensor (u, v); unknown values are kept as stored."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 12:
        raise InputError(f"{path}: too short for a .flo file ({len(data)} bytes)")
    magic, width, height = struct.unpack("<fii", data[:12])
    if magic != FLO_MAGIC:
        raise InputError(f"{path}: not a .flo file (magic {magic!r}, expected {FLO_MAGIC})")
    if width <= 0 or height <= 0:
        raise InputError(f"{path}: invalid size {width} x {height}")
    expected = 12 + 8 * width * height
    if len(data) != expected:
        raise InputError(f"{path}: {len(data)} bytes, expected {expected} for {width} x {height} flow")
    flow = torch.frombuffer(bytearray(data[12:]), dtype=torch.float32)
    if struct.pack("=f", 1.0) != struct.pack("<f", 1.0):  # big-endian host: swap to native order
        flow = flow.view(torch.uint8).view(-1, 4).flip(1).contiguous().view(torch.float32).view(-1)
    return flow.view(height, width, 2).permute(2, 0, 1).contiguous()


def write_flo(flow: torch.Tensor, path: str | Path) -> None:
    """Write a (2, H, W) flow tensor (any device / float dtype) as a little-endian ``.flo`` file."""
    check_shape(flow, "C,H,W", "flow", C=2)
    check_floating(flow, "flow")
    _, height, width = flow.shape
    hw2 = flow.detach().to("cpu", torch.float32).permute(1, 2, 0).contiguous()
    if struct.pack("=f", 1.0) != struct.pack("<f", 1.0):
        hw2 = hw2.view(torch.uint8).view(-1, 4).flip(1).contiguous().view(torch.float32)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, struct.pack("<fii", FLO_MAGIC, width, height) + hw2.numpy().tobytes())


# ----------------------------------------------------------------------------------------- metrics
def valid_flow_mask(gt: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """(B, H, W) bool: pixels whose ground truth is known (finite, ``|u|, |v| < 1e9``) and ``valid``."""
    check_shape(gt, "B,C,H,W", "gt", C=2)
    known = (gt.abs() < UNKNOWN_FLOW).all(1)  # NaN compares False: unknown too
    if valid is None:
        return known
    s = check_shape(valid, "B,H,W", "valid", B=gt.shape[0], H=gt.shape[2], W=gt.shape[3])
    del s
    return known & valid.bool()


def _pair(pred: Any, gt: torch.Tensor, valid: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    check_shape(gt, "B,C,H,W", "gt", C=2)
    check_shape(pred, "B,C,H,W", "pred", B=gt.shape[0], C=2, H=gt.shape[2], W=gt.shape[3])
    check_floating(pred, "pred")
    check_floating(gt, "gt")
    mask = valid_flow_mask(gt, valid)
    gt = torch.where(mask.unsqueeze(1), gt, torch.zeros_like(gt))   # keeps 1e10 out of the arithmetic
    err = torch.linalg.vector_norm(pred - gt.to(pred.dtype), dim=1)  # (B, H, W)
    return torch.where(mask, err, torch.zeros_like(err)), mask


def _reduce(values: torch.Tensor, mask: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return values
    count = mask.flatten(1).sum(1).to(values.dtype)                  # (B,)
    total = values.flatten(1).sum(1)
    if reduction == "pixel":
        return total.sum() / count.sum().clamp(min=1)
    if reduction == "image":
        has = (count > 0).to(values.dtype)
        per_image = total / count.clamp(min=1)
        return (per_image * has).sum() / has.sum().clamp(min=1)
    raise ValueError(f"reduction must be 'pixel', 'image' or 'none', got {reduction!r}")


def epe(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None,
        reduction: str = "pixel") -> torch.Tensor:
    """End-point error ``||pred - gt||_2`` over the valid pixels.

    Args:
        pred, gt: (B, 2, H, W) flow; unknown ground truth (``>= 1e9``, not finite) is masked out.
        valid: optional (B, H, W) mask (e.g. KITTI's valid map), combined with the unknown mask.
        reduction: ``"pixel"``: sum of the EPE of every valid pixel in the batch divided by their
            number (all pixels weigh the same: accumulate sums and counts over a dataset for the
            per-pixel dataset average); ``"image"``: mean over images of each image's mean EPE (images
            without a valid pixel are left out; Sintel / FlyingChairs tables average per image, which
            equals "pixel" when every image has the same number of valid pixels); ``"none"``: the
            (B, H, W) EPE map, 0 at invalid pixels.

    Returns a 0-dim tensor (or the map), on the input's device, without a host sync.
    """
    err, mask = _pair(pred, gt, valid)
    return _reduce(err, mask, reduction)


def outlier_rate(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None,
                 reduction: str = "pixel", abs_threshold: float = 3.0, rel_threshold: float = 0.05) -> torch.Tensor:
    """KITTI 2015 Fl: fraction (0..1, not percent) of valid pixels whose EPE exceeds BOTH
    ``abs_threshold`` (3 px) and ``rel_threshold`` (5 %) of the ground-truth magnitude ``|gt|``.

    Arguments and reductions as :func:`epe` (``"none"`` returns the (B, H, W) 0/1 outlier map).
    """
    err, mask = _pair(pred, gt, valid)
    gt_mag = torch.linalg.vector_norm(torch.where(mask.unsqueeze(1), gt, torch.zeros_like(gt)), dim=1)
    out = (err > abs_threshold) & (err > rel_threshold * gt_mag.to(err.dtype)) & mask
    return _reduce(out.to(err.dtype), mask, reduction)


# ----------------------------------------------------------------------------------------- colour
_WHEEL_SEGMENTS = (15, 6, 4, 11, 13, 6)  # RY, YG, GC, CB, BM, MR


def _color_wheel(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(55, 3) Middlebury colour wheel in 0..255: each segment ramps one channel between two primaries."""
    ramps = []
    # (channel held at 255, channel ramping, ramps up?) per segment, from red through the hues back to red
    spec = ((0, 1, True), (1, 0, False), (1, 2, True), (2, 1, False), (2, 0, True), (0, 2, False))
    for n, (full, ramp, up) in zip(_WHEEL_SEGMENTS, spec):
        i = torch.arange(n, device=device, dtype=torch.float64)
        seg = torch.zeros(n, 3, device=device, dtype=torch.float64)
        seg[:, full] = 255
        step = torch.floor(255 * i / n)
        seg[:, ramp] = step if up else 255 - step
        ramps.append(seg)
    return torch.cat(ramps).to(dtype)


def flow_to_color(flow: torch.Tensor, max_flow: float | torch.Tensor | None = None) -> torch.Tensor:
    """Middlebury colour coding: (B, 2, H, W) flow -> (B, 3, H, W) uint8 RGB.

    Hue = direction (right = red, left = cyan, up = blue/violet, down = yellow-green), saturation =
    magnitude / ``max_flow``; white is zero flow. Without ``max_flow`` each image is normalised by its
    own largest valid magnitude (Middlebury's ``flowToColor``); magnitudes above 1 after normalisation
    are darkened (x 0.75) as in the original code. Unknown flow (``>= 1e9``, NaN) is black.
    """
    check_shape(flow, "B,C,H,W", "flow", C=2)
    check_floating(flow, "flow")
    work = torch.promote_types(flow.dtype, torch.float32)
    known = (flow.abs() < UNKNOWN_FLOW).all(1, keepdim=True)                 # (B, 1, H, W)
    f = torch.where(known, flow, torch.zeros_like(flow)).to(work)
    u, v = f[:, 0:1], f[:, 1:2]
    rad = torch.sqrt(u * u + v * v)
    if max_flow is None:
        scale = rad.amax(dim=(1, 2, 3), keepdim=True) + torch.finfo(work).eps
    else:
        scale = torch.as_tensor(max_flow, dtype=work, device=flow.device)
    rad = rad / scale
    wheel = _color_wheel(flow.device, work)                                   # (55, 3)
    ncols = wheel.shape[0]
    angle = torch.atan2(-v, -u) / math.pi                                     # (-1, 1]
    fk = (angle + 1) / 2 * (ncols - 1)
    k0 = fk.floor().long().clamp(0, ncols - 1)
    k1 = torch.where(k0 + 1 == ncols, torch.zeros_like(k0), k0 + 1)
    frac = (fk - k0.to(work)).unsqueeze(-1)                                   # (B, 1, H, W, 1)
    col = (1 - frac) * wheel[k0] + frac * wheel[k1]                           # (B, 1, H, W, 3) in 0..255
    r = rad.unsqueeze(-1)
    col = torch.where(r <= 1, 255 - r * (255 - col), col * 0.75)
    col = torch.where(known.unsqueeze(-1), col, torch.zeros_like(col))
    return col.floor().clamp(0, 255).to(torch.uint8).squeeze(1).permute(0, 3, 1, 2).contiguous()


# ----------------------------------------------------------------------------------------- sizes
def padded_size(size: Sequence[int], multiple: int = 64) -> tuple[int, int]:
    """(H, W) rounded up to multiples of ``multiple`` (the network input size for an H x W pair)."""
    h, w = (int(s) for s in size[-2:])
    return -(-h // multiple) * multiple, -(-w // multiple) * multiple


def resize_flow(flow: torch.Tensor, size: Sequence[int], align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize of a (B, 2, h, w) flow to ``size`` with u scaled by W/w and v by H/h."""
    h, w = flow.shape[-2:]
    size = (int(size[-2]), int(size[-1]))
    if (h, w) == size:
        return flow
    out = F.interpolate(flow, size=size, mode="bilinear", align_corners=align_corners)
    scale = torch.tensor([size[1] / w, size[0] / h], dtype=out.dtype, device=out.device).view(1, 2, 1, 1)
    return out * scale
