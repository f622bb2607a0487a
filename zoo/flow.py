"""Optical flow utilities and the ``optical-flow`` transforms / postprocess presets.

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
- :class:`OpticalFlowTransforms` / :class:`OpticalFlowPostprocess`: registered as preset
  ``"optical-flow"``.

How the padding travels from the transforms to the postprocess: it does not travel at all. The
transforms pad each frame at the bottom and right to the next multiple of ``multiple`` (64 for FlowNet),
so the padding is a deterministic function of the original size; ``postprocess(flow, size)`` takes the
original (H, W) (``images.shape[-2:]``), recomputes the padded size, brings the flow to the padded size
(bilinear, vectors scaled by the resize factors) and crops the top-left H x W. Nothing is stored
between the calls, so one transforms/postprocess pair serves any batch and stays compile-friendly.

Everything here reads only shapes and dtypes inside forward passes (no ``.item()``, no host sync) and
runs on any device; file I/O is the only part that touches the host.
"""
from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import InputError
from zoo.ops._checks import check_floating, check_shape
from zoo.transforms import register_postprocess, register_transform

__all__ = [
    "FLO_MAGIC", "UNKNOWN_FLOW", "read_flo", "write_flo", "valid_flow_mask", "flow_to_color", "epe",
    "outlier_rate", "padded_size", "OpticalFlowTransforms", "OpticalFlowPostprocess",
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
    path.write_bytes(struct.pack("<fii", FLO_MAGIC, width, height) + hw2.numpy().tobytes())


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


# ----------------------------------------------------------------------------------------- presets
def padded_size(size: Sequence[int], multiple: int = 64) -> tuple[int, int]:
    """(H, W) rounded up to multiples of ``multiple`` (the network input size for an H x W pair)."""
    h, w = (int(s) for s in size[-2:])
    return -(-h // multiple) * multiple, -(-w // multiple) * multiple


def _as_pairs(images: Any) -> torch.Tensor:
    """(B, 2, 3, H, W) / (2, 3, H, W) tensor, or (frame1, frame2) with (B, 3, H, W) / (3, H, W) each
    -> float (B, 2, 3, H, W) in [0, 1]."""
    if isinstance(images, (tuple, list)):
        if len(images) != 2:
            raise InputError(f"give the two frames as (image1, image2), got {len(images)} tensors")
        frames = []
        for name, im in zip(("image1", "image2"), images):
            if not isinstance(im, torch.Tensor):
                raise InputError(f"{name} must be a tensor (B x 3 x H x W), got {type(im).__name__}")
            frames.append(im.unsqueeze(0) if im.dim() == 3 else im)
        if frames[0].shape != frames[1].shape or frames[0].dtype != frames[1].dtype:
            raise InputError(f"image1 and image2 must share shape and dtype, got {tuple(frames[0].shape)} "
                             f"{frames[0].dtype} and {tuple(frames[1].shape)} {frames[1].dtype}")
        images = torch.stack(frames, 1)
    if not isinstance(images, torch.Tensor):
        raise InputError(f"images must be a (B, 2, 3, H, W) tensor or a pair of (B, 3, H, W) tensors, "
                         f"got {type(images).__name__}")
    if images.dim() == 4:
        images = images.unsqueeze(0)
    check_shape(images, "B,N,C,H,W", "images", N=2, C=3)
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if not images.is_floating_point():
        raise InputError(f"images must be uint8 in [0, 255] or floating point in [0, 1], got {images.dtype}")
    return images


@register_transform("optical-flow")
class OpticalFlowTransforms(nn.Module):
    """Frame pair -> FlowNet input (B, 6, H', W'): frame 1 channels then frame 2 channels.

    Input: RGB frames as a (B, 2, 3, H, W) tensor, a single (2, 3, H, W) pair, or a tuple
    ``(image1, image2)`` of (B, 3, H, W) / (3, H, W) tensors; uint8 in [0, 255] or float in [0, 1].

    Steps: scale to [0, 1]; optional RGB -> BGR flip (``channel_order="bgr"``, for mmflow weights);
    subtract ``mean``; pad bottom/right to multiples of ``multiple`` (``pad_mode`` of
    ``torch.nn.functional.pad``, "replicate" as ptlflow's padder; "constant" pads with 0 = the mean).

    ``mean``: ``"pair"`` (default): per pair and channel over both frames, as flownet2-pytorch's
    ``rgb_mean`` (and the training notes); ``"image"``: per frame and channel, as ptlflow's FlowNet;
    three floats: a fixed mean in [0, 1] units in ``channel_order`` (FlowNetPytorch's training script
    uses (0.45, 0.432, 0.411)); ``None``: no subtraction (mmflow).
    """

    def __init__(self, mean: str | Sequence[float] | None = "pair", channel_order: str = "rgb",
                 multiple: int = 64, pad_mode: str = "replicate") -> None:
        super().__init__()
        if channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        if isinstance(mean, str):
            if mean not in ("pair", "image"):
                raise ValueError(f"mean must be 'pair', 'image', three floats or None, got {mean!r}")
            self.mean_mode = mean
            fixed = (0.0, 0.0, 0.0)
        elif mean is None:
            self.mean_mode, fixed = "none", (0.0, 0.0, 0.0)
        else:
            if len(mean) != 3:
                raise ValueError(f"a fixed mean needs 3 values, got {list(mean)!r}")
            self.mean_mode, fixed = "fixed", tuple(float(m) for m in mean)
        if not isinstance(multiple, int) or multiple < 1:
            raise ValueError(f"multiple must be a positive int, got {multiple!r}")
        if pad_mode not in ("replicate", "constant", "reflect"):
            raise ValueError(f"pad_mode must be 'replicate', 'constant' or 'reflect', got {pad_mode!r}")
        self.channel_order, self.multiple, self.pad_mode = channel_order, multiple, pad_mode
        self.register_buffer("fixed_mean", torch.tensor(fixed).view(1, 1, 3, 1, 1), persistent=False)

    def forward(self, images: Any) -> torch.Tensor:
        x = _as_pairs(images)                                                # (B, 2, 3, H, W)
        if self.channel_order == "bgr":
            x = x.flip(2)
        if self.mean_mode == "pair":
            x = x - x.mean(dim=(1, 3, 4), keepdim=True)
        elif self.mean_mode == "image":
            x = x - x.mean(dim=(3, 4), keepdim=True)
        elif self.mean_mode == "fixed":
            x = x - self.fixed_mean.to(device=x.device, dtype=x.dtype)
        b, _, _, h, w = x.shape
        x = x.reshape(b, 6, h, w)
        ph, pw = padded_size((h, w), self.multiple)
        if (ph, pw) != (h, w):
            x = F.pad(x, (0, pw - w, 0, ph - h), mode=self.pad_mode)
        return x

    def extra_repr(self) -> str:
        mean = self.fixed_mean.flatten().tolist() if self.mean_mode == "fixed" else self.mean_mode
        return f"mean={mean!r}, channel_order={self.channel_order!r}, multiple={self.multiple}, pad_mode={self.pad_mode!r}"


def resize_flow(flow: torch.Tensor, size: Sequence[int], align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize of a (B, 2, h, w) flow to ``size`` with u scaled by W/w and v by H/h."""
    h, w = flow.shape[-2:]
    size = (int(size[-2]), int(size[-1]))
    if (h, w) == size:
        return flow
    out = F.interpolate(flow, size=size, mode="bilinear", align_corners=align_corners)
    scale = torch.tensor([size[1] / w, size[0] / h], dtype=out.dtype, device=out.device).view(1, 2, 1, 1)
    return out * scale


@register_postprocess("optical-flow")
class OpticalFlowPostprocess(nn.Module):
    """Model output -> (B, 2, H, W) flow in pixels at the original size ``size`` (``images.shape[-2:]``).

    Accepts the eval output of the flow models (B, 2, H', W') at the padded input size, already in
    pixels; a lower-resolution flow in pixels of its own grid (brought to H' x W' bilinearly, vectors
    scaled by the resize factors); the training output (a tuple/list whose first entry is flow2 in
    network units: multiplied by ``div_flow`` first); or a ptlflow-style dict ``{"flows": B x 1 x 2 x h x w}``.
    Then crops the top-left H x W (the transforms padded bottom/right; see the module docstring).
    """

    def __init__(self, multiple: int = 64, div_flow: float = 20.0) -> None:
        super().__init__()
        self.multiple, self.div_flow = multiple, float(div_flow)

    def forward(self, output: Any, size: Sequence[int]) -> torch.Tensor:
        if isinstance(output, Mapping):
            flow = output["flows"][:, 0] if "flows" in output else None
        elif isinstance(output, (tuple, list)):
            flow = output[0] * self.div_flow if output and isinstance(output[0], torch.Tensor) else None
        else:
            flow = output
        if not isinstance(flow, torch.Tensor):
            raise InputError("optical-flow postprocess expects a (B, 2, h, w) flow tensor, a tuple of "
                             f"multi-scale predictions or a dict with 'flows', got {type(output).__name__}")
        check_shape(flow, "B,C,H,W", "flow", C=2)
        h, w = (int(s) for s in size[-2:])
        ph, pw = padded_size((h, w), self.multiple)
        flow = resize_flow(flow, (ph, pw))
        return flow[..., :h, :w]

    def extra_repr(self) -> str:
        return f"multiple={self.multiple}, div_flow={self.div_flow}"
