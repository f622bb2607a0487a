"""Video prediction (``dfn-moving-mnist``, ``convnet-moving-mnist``): the ``video-frames`` presets, BCE
evaluation with the copy-last-frame baseline, the BCE training step and ``zoo predict``'s strip of frames.

Frames are (B, T, 1, H, W) grey sequences, uint8 in [0, 255] or float in [0, 1]; (B, T, H, W) is accepted.

Evaluation (:func:`evaluate_video`) on datasets of ``{"inputs", "targets"}`` sequences (e.g.
``moving-digits:256``, held-out digits): ``bce`` = binary cross-entropy per image (summed over a frame's
pixels, averaged over the predicted frames and the sequences: the DFN paper's Moving MNIST metric),
``bce_pixel`` = the same per pixel, ``copy_last_bce`` / ``copy_last_bce_pixel`` = the same for the
prediction that repeats the last observed frame (the baseline), ``mse`` (per pixel) for both,
``bce_ratio`` = bce / copy_last_bce, and ``floor_bce`` = the BCE of the targets against themselves (their
binary entropy: the digits' grey edges make it > 0, the least any prediction can reach). It runs without
a model too (the baseline and the floor only).

The copied frame is clamped to [``COPY_LAST_EPS``, 1 - ``COPY_LAST_EPS``] = [0.08, 0.92] for the BCE (not for
the MSE): copied pixels are exactly 0 or 1 where the digits are, so a raw copy costs the clamp of
``torch.nn.functional.binary_cross_entropy`` (log >= -100) on every pixel a digit enters or leaves, about
22,000 per image on ``moving-digits:256`` — a number about that clamp, not about copying. 0.08 is the best
clamp of 0.03, 0.05, 0.07, 0.08, 0.1, 0.12, 0.15 for the copy on 256 train-split sequences (seed 1), so the
baseline is as strong as a clamp makes it. The model's
transforms and postprocess are applied, so the predictions are compared at the dataset's frame size.

Training (:data:`VIDEO_PREDICTION`'s ``training``): the model's output probabilities (brought back to the
data's frame size by the postprocess when the transforms resized them) against the sequence's future
frames, loss = BCE per image (:func:`zoo.video.bce_per_image`, the DFN loss),
logged metric ``bce_pixel``.

``zoo predict NAME f01.png ... f10.png``: ten frames (PNG / JPEG, same size; colour is averaged to
grey) -> a picture with rows: the input frames, the predicted frames, and for a dynamic filter network
(a model whose ``step`` returns filter logits) the mean displacement of each prediction's filters
(Middlebury colours: where a pixel's content comes from, per prediction) and the 9 x 9 filters of the
first prediction at up to ten bright predicted pixels (each scaled to its maximum).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from zoo.distributed import gather_lists, rank_indices
from zoo.errors import InputError, ZooError
from zoo.flow import flow_to_color
from zoo.tasks.base import Predict, RawInput, Task, Training, TrainingRun, check_sample
from zoo.tasks.preprocess import check_input_args, check_min_size, unit_float
from zoo.video import bce_per_image, frame_bce

__all__ = ["VIDEO_PREDICTION", "VideoFramesTransforms", "VideoFramesPostprocess", "evaluate_video"]


def _to_frames(frames: Tensor) -> Tensor:
    if not isinstance(frames, Tensor):
        raise InputError("frames must be a tensor (B, T, 1, H, W)")
    if frames.dim() == 4:
        frames = frames.unsqueeze(2)
    if frames.dim() != 5 or frames.shape[2] != 1:
        raise InputError(f"frames must have shape (B, T, 1, H, W) or (B, T, H, W), got {tuple(frames.shape)}")
    return unit_float(frames, "frames")


def _resize(frames: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(frames.shape[-2:]) == size:
        return frames
    b, t = frames.shape[:2]
    out = F.interpolate(frames.flatten(0, 1), size=size, mode="bilinear", align_corners=False)
    return out.view(b, t, 1, *size)


class VideoFramesTransforms(nn.Module):
    """Frames (B, T, 1, H, W) / (B, T, H, W), uint8 or float in [0, 1] -> float (B, T, 1, size, size)."""

    def __init__(self, size: int | None = 64, min_size: int | None = None) -> None:
        super().__init__()
        check_input_args(1.0, min_size)
        self.size, self.min_size = size, min_size

    def forward(self, frames: Tensor) -> Tensor:
        x = _to_frames(frames)
        check_min_size(x, self.min_size, "frames")
        return x if self.size is None else _resize(x, (self.size, self.size))


class VideoFramesPostprocess(nn.Module):
    """Predicted frames (B, T, 1, h, w) -> clamped to [0, 1], resized to ``size`` -> (B, T, 1, H, W)."""

    def forward(self, output: Tensor, size: Sequence[int]) -> Tensor:
        frames = _to_frames(output)
        return _resize(frames.clamp(0, 1), tuple(int(v) for v in size[-2:]))


# ------------------------------------------------------------------------------------ evaluation
COPY_LAST_EPS = 0.08  # the copy-last-frame baseline's probabilities are clamped to [eps, 1 - eps] (module docstring)


@torch.no_grad()
def evaluate_video(model: nn.Module | None, dataset: Dataset, *, device: str | torch.device = "cpu",
                   max_samples: int | None = None) -> dict[str, Any]:
    """BCE (per image and per pixel) and MSE of ``model`` (None: the copy-last-frame baseline only) on a
    dataset of ``{"inputs", "targets"}`` sequences; see the module docstring."""
    if model is not None:
        was_training = model.training
        model.eval()
    rows = []
    try:
        for i in rank_indices(len(dataset), max_samples):
            s = dataset[i]
            check_sample(s, ("inputs", "targets"), "video prediction evaluation")
            inputs, target = s["inputs"].unsqueeze(0).to(device), s["targets"].unsqueeze(0).to(device).float()
            last = inputs[:, -1:].float().expand_as(target)
            row = {"index": i, "id": str(s.get("id", i)), "frames": target.shape[1],
                   "copy_last_bce": float(frame_bce(last.clamp(COPY_LAST_EPS, 1 - COPY_LAST_EPS), target).mean()),
                   "copy_last_mse": float((last - target).square().mean()),
                   "floor_bce": float(frame_bce(target, target).mean())}
            if model is not None:
                pred = model.postprocess(model(model.transforms(inputs)), target.shape[-2:]).float()
                if pred.shape != target.shape:
                    raise InputError(f"the model predicts {tuple(pred.shape[1:])} frames per sequence, the dataset "
                                     f"has {tuple(target.shape[1:])} targets")
                row["bce"] = float(frame_bce(pred, target).mean())
                row["mse"] = float((pred - target).square().mean())
            rows.append(row)
    finally:
        if model is not None and was_training:
            model.train()
    rows = sorted(gather_lists(rows), key=lambda r: r["index"])
    pixels = int(dataset[0]["targets"][0].numel()) if len(rows) else 1
    out: dict[str, Any] = {"task": VIDEO_PREDICTION.name, "sequences": len(rows), "pixels_per_frame": pixels}
    for key in ("copy_last_bce", "copy_last_mse", "floor_bce") + (("bce", "mse") if model is not None else ()):
        out[key] = sum(r[key] for r in rows) / max(len(rows), 1)
        if key.endswith("bce"):
            out[key + "_pixel"] = out[key] / pixels
    if model is not None:
        out["bce_ratio"] = out["bce"] / out["copy_last_bce"] if out["copy_last_bce"] > 0 else float("nan")
    out["per_image"] = rows
    return out


# ------------------------------------------------------------------------------------ training
def _network_input(transforms: nn.Module, batch: Mapping[str, Tensor]) -> Tensor:
    return transforms(batch["inputs"])


def _training_step(model: nn.Module, batch: Mapping[str, Tensor], run: TrainingRun) -> tuple[Tensor, Tensor]:
    pred, target = model(_network_input(run.transforms, batch)), batch["targets"]
    if pred.shape[-2:] != target.shape[-2:]:  # the transforms resized the frames: compare at the data's size
        pred = run.postprocess(pred, target.shape[-2:])
    loss = bce_per_image(pred, target)
    return loss, loss.detach() / pred[0, 0].numel()


# ------------------------------------------------------------------------------------ zoo predict
PREDICT_FRAMES = 10
_GAP = 2


def _check(name: str, images: list[Tensor], paths: Sequence[str]) -> None:
    first = images[0].shape[-2:]
    for image, path in zip(images, paths):
        if image.shape[-2:] != first:
            raise ZooError(f"{name} needs frames of one size: {paths[0]} is {first[1]}x{first[0]}, {path} is "
                           f"{image.shape[-1]}x{image.shape[-2]}")


def _row(tiles: list[Tensor], h: int, w: int) -> Tensor:
    """3 x h x w uint8 tiles -> one 3 x h x (n w + gaps) strip (gaps black)."""
    strip = torch.zeros(3, h, len(tiles) * (w + _GAP) - _GAP, dtype=torch.uint8, device=tiles[0].device)
    for k, tile in enumerate(tiles):
        strip[:, :, k * (w + _GAP): k * (w + _GAP) + w] = tile
    return strip


def _grey(frame: Tensor) -> Tensor:
    """(1, h, w) float in [0, 1] -> 3 x h x w uint8."""
    return (frame * 255).round().clamp(0, 255).to(torch.uint8).expand(3, -1, -1)


def _bright_positions(frame: Tensor, count: int, spacing: int) -> list[tuple[int, int]]:
    """Up to ``count`` (y, x) of the brightest pixels of ``frame`` (h, w), at least ``spacing`` apart."""
    order = frame.flatten().argsort(descending=True)
    w, chosen = frame.shape[-1], []
    for flat in order[: 64 * count].tolist():
        y, x = divmod(flat, w)
        if float(frame[y, x]) <= 0.05:
            break
        if all(abs(y - cy) >= spacing or abs(x - cx) >= spacing for cy, cx in chosen):
            chosen.append((y, x))
            if len(chosen) == count:
                break
    return chosen


def _draw(model: nn.Module, images: list[Tensor], options: Any) -> tuple[Tensor, dict[str, Any]]:
    frames = torch.stack([im.float().mean(0, keepdim=True) for im in images]).round().to(torch.uint8)  # T x 1 x H x W
    video = model.transforms(frames.unsqueeze(0))                                  # 1 x T x 1 x h x w in [0, 1]
    hidden_logits: list[Tensor] = []
    step = getattr(model, "step", None)
    if callable(step) and hasattr(model, "width"):
        b, t, _, h, w = video.shape
        hidden = video.new_zeros(b, 4 * model.width, h // 2, w // 2)
        for k in range(t - 1):
            _, hidden, _ = step(video[:, k], hidden)
        current, outs = video[:, -1], []
        for _ in range(model.out_frames):
            current, hidden, logits = step(current, hidden)
            outs.append(current)
            if logits is not None:
                hidden_logits.append(logits)
        output = torch.stack(outs, 1)
    else:
        output = model(video)
    size = frames.shape[-2:]
    pred = model.postprocess(output, size)[0]                                      # T_out x 1 x H x W
    h, w = size
    rows = [_row([_grey(f / 255.0) for f in frames.float()], h, w), _row([_grey(f) for f in pred], h, w)]
    summary: dict[str, Any] = {"input_frames": len(images), "predicted_frames": int(pred.shape[0])}
    if hidden_logits:
        k = model.filter_size
        taps = torch.stack(hidden_logits, 1)[0].softmax(1)                        # T_out x k*k x h' x w'
        offs = torch.arange(k, device=taps.device, dtype=taps.dtype) - k // 2
        dy = (taps.view(-1, k, k, *taps.shape[-2:]) * offs.view(1, k, 1, 1, 1)).sum((1, 2))
        dx = (taps.view(-1, k, k, *taps.shape[-2:]) * offs.view(1, 1, k, 1, 1)).sum((1, 2))
        # the filter at p averages the pixels around p + (dx, dy): content moves by -(dx, dy)
        motion = -torch.stack((dx, dy), 1)
        motion = F.interpolate(motion, size=tuple(size), mode="nearest")
        rows.append(_row(list(flow_to_color(motion, max_flow=float(k // 2))), h, w))
        first = taps[0].view(k, k, *taps.shape[-2:])
        scale = h / taps.shape[-2]
        spots = _bright_positions(F.interpolate(pred[:1], size=taps.shape[-2:], mode="bilinear",
                                                align_corners=False)[0, 0], PREDICT_FRAMES, k)
        tiles = []
        for y, x in spots:
            f = first[:, :, y, x]
            f = (f / f.max().clamp(min=1e-12)).unsqueeze(0).unsqueeze(0)
            tiles.append(_grey(F.interpolate(f, size=(h, w), mode="nearest")[0]))
        if tiles:
            rows.append(_row(tiles + [torch.zeros(3, h, w, dtype=torch.uint8)] * (PREDICT_FRAMES - len(tiles)), h, w))
        summary["filter_positions"] = [[round(y * scale), round(x * scale)] for y, x in spots]
        summary["mean_displacement_px"] = round(float(motion.norm(dim=1).mean()), 3)
    width = max(r.shape[-1] for r in rows)
    picture = torch.zeros(3, len(rows) * (h + _GAP) - _GAP, width, dtype=torch.uint8, device=rows[0].device)
    for k, r in enumerate(rows):
        picture[:, k * (h + _GAP): k * (h + _GAP) + h, : r.shape[-1]] = r
    return picture, summary


VIDEO_PREDICTION = Task(
    name="video-prediction",
    headline_metrics=("bce_pixel", "bce", "MSE", "PSNR"),
    raw_inputs=lambda lead, h, w: (RawInput("frames", (lead[0], 1, h, w),
                                            "uint8 grey frames in [0, 255], (B, T, 1, H, W)"),),
    input_names=("frames",),
    usage=(
        "frames = torch.stack([read_image(f\"frame{i:02d}.png\")[:1] for i in range(1, 11)]).unsqueeze(0)  # 1 x 10 x 1 x H x W\n"
        "future = model.postprocess(model(model.transforms(frames)), frames.shape[-2:])  # 1 x 10 x 1 x H x W in [0, 1]"
    ),
    transforms={"video-frames": VideoFramesTransforms},
    postprocess={"video-frames": VideoFramesPostprocess},
    evaluator=evaluate_video,
    metrics=("bce", "bce_pixel", "mse", "copy_last_bce", "copy_last_bce_pixel", "copy_last_mse", "floor_bce",
             "floor_bce_pixel", "bce_ratio", "per_image"),
    evaluates_without_model=True,
    training=Training(step=_training_step, metric="bce_pixel", network_input=_network_input, keep_resize=True,
                      crop_multiple=2),
    predict=Predict(draw=_draw, inputs=f"{PREDICT_FRAMES} frames", num_inputs=PREDICT_FRAMES, check=_check),
)
