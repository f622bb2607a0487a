"""Optical flow: the ``optical-flow`` presets, EPE / Fl evaluation (with the zero-flow baseline),
FlowNet's multi-scale training loss and ``zoo predict``'s Middlebury colour picture.

Conventions, files, metrics and colours are :mod:`zoo.flow`'s.

How the padding travels from the transforms to the postprocess: it does not travel at all. The
transforms pad each frame at the bottom and right to the next multiple of ``multiple`` (64 for FlowNet),
so the padding is a deterministic function of the original size; ``postprocess(flow, size)`` takes the
original (H, W) (``images.shape[-2:]``), recomputes the padded size, brings the flow to the padded size
(bilinear, vectors scaled by the resize factors) and crops the top-left H x W. Nothing is stored
between the calls, so one transforms/postprocess pair serves any batch and stays compile-friendly.

Evaluation (:func:`evaluate_flow`): ``epe`` = mean over pairs of each pair's mean EPE over valid pixels
(the FlyingChairs / Sintel table convention), ``epe_pixel`` = EPE averaged over all valid pixels of the
set, ``fl`` = fraction of valid pixels with EPE > 3 px and > 5 % of |gt| (KITTI Fl, pixel-weighted),
``zero_epe`` / ``zero_fl`` = the same for a prediction of zero flow (the baseline every model must beat),
and ``per_pair`` with every pair's numbers. It runs without a model too (the baseline only).

Training: FlowNet's multi-scale loss (Dosovitskiy et al. 2015; as FlowNetPytorch's ``multiscaleEPE``):
the target divided by ``div_flow`` (20) is area-downsampled to each prediction (flow2..flow6), the
per-pixel EPE is summed over the pixels (``flow_reduction="sum"``, FlowNetPytorch) or averaged
(``"mean"``), averaged over the batch and weighted 0.005, 0.01, 0.02, 0.08, 0.32 for flow2..flow6. Pixels
with unknown ground truth are left out. The logged ``epe`` is flow2 x div_flow upsampled bilinearly to
full size against the target (FlowNetPytorch's ``realEPE``). Augmentation: ``photometric`` = s > 0
applies FlowNet's contrast, colour, gamma, brightness and noise jitter (:mod:`zoo.data.photometric`)
scaled by s to both frames, seeded by (seed, p) (:class:`FlowStream`). Crops are multiples of 64.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from zoo.data.photometric import photometric_jitter
from zoo.data.positions import PositionStream
from zoo.data.shapes import sample_seed
from zoo.distributed import gather_lists, rank_indices
from zoo.errors import InputError, ZooError
from zoo.flow import epe, flow_to_color, outlier_rate, padded_size, resize_flow, write_flo
from zoo.checks import check_shape
from zoo.tasks.base import Predict, RawInput, Task, Training, TrainingRun
from zoo.tasks.preprocess import check_input_args, check_min_size, unit_float

__all__ = ["OPTICAL_FLOW", "OpticalFlowTransforms", "OpticalFlowPostprocess", "evaluate_flow", "FLOWNET_WEIGHTS",
           "multiscale_epe_loss", "full_res_epe", "FlowStream"]

FLOWNET_WEIGHTS = (0.005, 0.01, 0.02, 0.08, 0.32)  # flow2 .. flow6
PHOTOMETRIC_SALT = 0x9E3779B97F4A7C15 >> 1


# ------------------------------------------------------------------------------------ presets
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
    return unit_float(images, "images")


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
    uses (0.45, 0.432, 0.411)); ``None``: no subtraction (mmflow). Frames below ``min_size`` pixels
    high or wide are refused (the entry's ``min_input_size``).
    """

    def __init__(self, mean: str | Sequence[float] | None = "pair", channel_order: str = "rgb",
                 multiple: int = 64, pad_mode: str = "replicate", min_size: int | None = None) -> None:
        super().__init__()
        check_input_args(1.0, min_size)
        self.min_size = min_size
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
        x = _as_pairs(images)
        check_min_size(x, self.min_size, "frames")                                                # (B, 2, 3, H, W)
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


class OpticalFlowPostprocess(nn.Module):
    """Model output -> (B, 2, H, W) flow in pixels at the original size ``size`` (``images.shape[-2:]``).

    Accepts the eval output of the flow models (B, 2, H', W') at the padded input size, already in
    pixels; a lower-resolution flow in pixels of its own grid (brought to H' x W' bilinearly, vectors
    scaled by the resize factors); the training output (a tuple/list whose first entry is flow2 in
    network units: multiplied by ``div_flow`` first); then crops the top-left H x W (the transforms padded
    bottom/right; see the module docstring). A ptlflow-style dict ``{"flows": B x 1 x 2 x h x w}`` is
    already at the frames' size (ptlflow undoes its own resizing), so it is only brought to H x W.
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
        if isinstance(output, Mapping):
            return resize_flow(flow, (h, w))
        ph, pw = padded_size((h, w), self.multiple)
        flow = resize_flow(flow, (ph, pw))
        return flow[..., :h, :w]

    def extra_repr(self) -> str:
        return f"multiple={self.multiple}, div_flow={self.div_flow}"


# ------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def evaluate_flow(model: nn.Module | None, dataset: Dataset, *, transforms: nn.Module | None = None,
                  postprocess: nn.Module | None = None, device: str | torch.device = "cpu",
                  max_samples: int | None = None) -> dict[str, Any]:
    """EPE, Fl and the zero-flow baseline of ``model`` (None: baseline only) on a flow dataset."""
    if model is not None:
        transforms = transforms if transforms is not None else model.transforms
        postprocess = postprocess if postprocess is not None else model.postprocess
        was_training = model.training
        model.eval()
    rows = []
    for i in rank_indices(len(dataset), max_samples):
        s = dataset[i]
        gt = s["flow"].unsqueeze(0).to(device)
        valid = s["valid"].unsqueeze(0).to(device)
        zero = torch.zeros_like(gt)
        row = {"index": i, "id": str(s.get("id", i)), "valid_pixels": int(valid.sum()),
               "zero_epe": float(epe(zero, gt, valid)), "zero_fl": float(outlier_rate(zero, gt, valid))}
        if model is not None:
            im1, im2 = s["image1"].unsqueeze(0).to(device), s["image2"].unsqueeze(0).to(device)
            pred = postprocess(model(transforms((im1, im2))), im1.shape[-2:]).float()
            row["epe"] = float(epe(pred, gt, valid))
            row["fl"] = float(outlier_rate(pred, gt, valid))
        rows.append(row)
    if model is not None and was_training:
        model.train()
    rows = sorted(gather_lists(rows), key=lambda r: r["index"])
    return _flow_summary(rows, with_model=model is not None)


def _flow_summary(rows: list[dict[str, Any]], with_model: bool) -> dict[str, Any]:
    n_pix = sum(r["valid_pixels"] for r in rows)
    out: dict[str, Any] = {"task": OPTICAL_FLOW.name, "pairs": len(rows), "valid_pixels": n_pix}
    keys = ("zero_epe", "zero_fl") + (("epe", "fl") if with_model else ())
    for key in keys:
        weighted = sum(r[key] * r["valid_pixels"] for r in rows) / max(n_pix, 1)
        per_pair = sum(r[key] for r in rows) / max(len(rows), 1)
        if key.endswith("epe"):
            out[key] = per_pair
            out[key + "_pixel"] = weighted
        else:
            out[key] = weighted
    if with_model:
        out["epe_ratio"] = out["epe"] / out["zero_epe"] if out["zero_epe"] > 0 else math.nan
    out["per_pair"] = rows
    return out


# ------------------------------------------------------------------------------------ training
def multiscale_epe_loss(outputs: Sequence[torch.Tensor], target: torch.Tensor, valid: torch.Tensor | None = None,
                        weights: Sequence[float] = FLOWNET_WEIGHTS, div_flow: float = 20.0,
                        reduction: str = "sum") -> torch.Tensor:
    """FlowNet multi-scale EPE: ``outputs`` (flow2, ..., flow6) in network units (B, 2, h_i, w_i),
    ``target`` (B, 2, H, W) in pixels, ``valid`` (B, H, W) known-flow mask. See the module docstring."""
    if len(outputs) != len(weights):
        raise ValueError(f"{len(outputs)} predictions but {len(weights)} weights")
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    b = target.shape[0]
    if valid is None:
        valid = torch.ones(target.shape[0], *target.shape[2:], dtype=torch.bool, device=target.device)
    scaled = torch.where(valid.unsqueeze(1), target, torch.zeros_like(target)) / div_flow
    mask = valid.unsqueeze(1).to(target.dtype)
    loss = target.new_zeros(())
    for out, w in zip(outputs, weights):
        h, wd = out.shape[-2:]
        t = F.interpolate(scaled, (h, wd), mode="area")
        m = F.interpolate(mask, (h, wd), mode="area")[:, 0]
        keep = (m > 0.999).to(out.dtype)                      # cells made only of known pixels
        err = torch.linalg.vector_norm(out - t, dim=1) * keep
        per_image = err.flatten(1).sum(1)
        if reduction == "mean":
            per_image = per_image / keep.flatten(1).sum(1).clamp(min=1)
        loss = loss + w * per_image.sum() / b
    return loss


def full_res_epe(flow2: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None, div_flow: float) -> torch.Tensor:
    """FlowNetPytorch's ``realEPE``: flow2 x div_flow upsampled bilinearly to the target size, mean EPE."""
    up = F.interpolate(flow2, target.shape[-2:], mode="bilinear", align_corners=False) * div_flow
    return epe(up, target, valid)


class FlowStream(PositionStream):
    """:class:`PositionStream` for flow pairs with optional photometric jitter
    (:func:`zoo.data.photometric.photometric_jitter` at ``strength``, seeded by (seed, p))."""

    def __init__(self, base: Dataset, seed: int, size: tuple[int, int], photometric: float = 0.0) -> None:
        if not 0.0 <= photometric <= 1.0:
            raise ValueError(f"photometric (--photometric) must be a strength in [0, 1], got {photometric}")
        super().__init__(base, seed, size)
        self.photometric = photometric

    def _jitter(self, sample: dict, p: int) -> dict:
        if self.photometric > 0:
            sample = dict(sample)
            sample["image1"], sample["image2"] = photometric_jitter(
                sample["image1"], sample["image2"], sample_seed(self.seed, p) ^ PHOTOMETRIC_SALT, self.photometric)
        return sample

    def __getitem__(self, p: int) -> dict:
        return self._jitter(super().__getitem__(p), p)

    def __getitems__(self, positions: Sequence[int]) -> list[dict]:
        return [self._jitter(s, p) for s, p in zip(super().__getitems__(positions), positions)]


def _stream(base: Dataset, seed: int, size: tuple[int, int], options: Mapping[str, Any]) -> Dataset:
    return FlowStream(base, seed, size, options.get("photometric", 0.0))


def _network_input(transforms: nn.Module, batch: Mapping[str, Tensor]) -> Tensor:
    return transforms((batch["image1"], batch["image2"]))


def _training_step(model: nn.Module, batch: Mapping[str, Tensor], run: TrainingRun) -> tuple[Tensor, Tensor]:
    div_flow = float(getattr(run.network, "div_flow", 20.0))
    outputs = model(_network_input(run.transforms, batch))
    valid = batch.get("valid")
    loss = multiscale_epe_loss(outputs, batch["flow"], valid, div_flow=div_flow, reduction=run.options["flow_reduction"])
    with torch.no_grad():
        metric = full_res_epe(outputs[0].detach(), batch["flow"], valid, div_flow)
    return loss, metric


# ------------------------------------------------------------------------------------ zoo predict
def _check(name: str, images: list[Tensor], paths: Sequence[str]) -> None:
    if images[0].shape != images[1].shape:
        (h0, w0), (h1, w1) = images[0].shape[-2:], images[1].shape[-2:]
        raise ZooError(f"{name} needs two frames of the same size: {paths[0]} is {w0}x{h0}, "
                       f"{paths[1]} is {w1}x{h1}; resize or crop one to the other's size")


def _draw(model: nn.Module, images: list[Tensor], options: Any) -> tuple[Tensor, dict[str, Any]]:
    pair = torch.stack(images).unsqueeze(0)                                          # (1, 2, 3, H, W)
    flow = model.postprocess(model(model.transforms(pair)), pair.shape[-2:])
    if options.flo:
        write_flo(flow[0], options.flo)
    return flow_to_color(flow)[0], {"flo": options.flo, "max_flow_px": round(float(flow.norm(dim=1).max()), 3)}


OPTICAL_FLOW = Task(
    name="optical-flow",
    headline_metrics=("EPE", "AEE"),
    raw_inputs=lambda lead, h, w: (RawInput("image_pair", (2, 3, h, w), "uint8 RGB frames in [0, 255], (B, 2, 3, H, W)"),),
    input_names=("frame_pair",),
    usage=(
        "frames = torch.stack([read_image(\"frame1.png\"), read_image(\"frame2.png\")]).unsqueeze(0)  # B x 2 x 3 x H x W\n"
        "flow = model.postprocess(model(model.transforms(frames)), frames.shape[-2:])  # B x 2 x H x W, pixels\n"
        "colours = zoo.flow.flow_to_color(flow)                                      # Middlebury colour wheel"
    ),
    transforms={"optical-flow": OpticalFlowTransforms},
    postprocess={"optical-flow": OpticalFlowPostprocess},
    evaluator=evaluate_flow,
    metrics=("epe", "epe_pixel", "fl", "zero_epe", "zero_epe_pixel", "zero_fl", "epe_ratio", "per_pair"),
    evaluates_without_model=True,
    training=Training(step=_training_step, metric="epe", network_input=_network_input, stream=_stream,
                      crop_multiple=64),
    predict=Predict(draw=_draw, inputs="two frames", num_inputs=2, check=_check),
)
