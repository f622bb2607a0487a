"""Salient object detection (RGB-D, HDFNet): the ``rgbd-saliency`` presets, S-measure / F-measure / MAE
evaluation and ``zoo predict``'s saliency map. The metrics are :mod:`zoo.saliency`'s.

Presets: ``rgbd-saliency`` transforms ``(rgb, depth) -> (rgb', depth')``: rgb (B, 3, H, W) uint8 or
float in [0, 1] -> ImageNet-normalised; depth (B, 1, H, W) (or B x H x W) uint8 or float in [0, 1]
-> float in [0, 1]; both resized bilinearly (no antialiasing, as PIL's resize of the reference is
replaced by tensor interpolation) to ``size`` x ``size`` (320, HDFNet). Postprocess: logits
(B, 1, h, w) -> sigmoid -> bilinear upsampling to the input size -> (B, H, W) in [0, 1].

Evaluation (:func:`evaluate_saliency`): the maps of the postprocess at the GT's resolution, scored per
image with :mod:`zoo.saliency` and averaged over images as :class:`zoo.saliency.SaliencyMetrics`
(PySODMetrics): ``s_measure`` (alpha 0.5), ``mae``, ``max_f`` / ``mean_f`` = max / mean over the 256
thresholds of the mean F-measure curve (beta^2 = 0.3), ``adaptive_f`` = F at the adaptive threshold
``min(2 mean, 1)``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from zoo.errors import InputError
from zoo.saliency import f_measure_adaptive, f_measure_curve, mae, s_measure
from zoo.tasks.base import Predict, RawInput, Task, image_inputs, run_samples
from zoo.tasks.preprocess import IMAGENET_MEAN, IMAGENET_STD, Normalize, check_input_args, to_float_batch, unit_float

__all__ = ["SALIENT_OBJECT_DETECTION", "RGBDSaliencyTransforms", "SaliencyPostprocess", "evaluate_saliency"]


# ------------------------------------------------------------------------------------ presets
def _depth_batch(depth: Tensor) -> Tensor:
    if not isinstance(depth, Tensor):
        raise InputError("depth must be a tensor (B, 1, H, W); read files with torchvision.io.read_image")
    if depth.dim() == 2:
        depth = depth[None, None]
    elif depth.dim() == 3:
        depth = depth.unsqueeze(1) if depth.shape[0] != 1 else depth.unsqueeze(0)
    if depth.dim() != 4 or depth.shape[1] != 1:
        raise InputError(f"depth must have shape (B, 1, H, W), (B, H, W) or (H, W), got {tuple(depth.shape)}")
    return unit_float(depth, "depth")


class RGBDSaliencyTransforms(nn.Module):
    """(rgb, depth) -> (ImageNet-normalised rgb, depth in [0, 1]), both resized to ``size`` x ``size``.

    rgb: (B, 3, H, W) or (3, H, W) uint8 or float in [0, 1]; depth: (B, 1, H, W), (B, H, W) or (H, W)
    uint8 or float in [0, 1], same batch and H x W as rgb. ``size=None`` keeps the input size. Inputs
    below ``min_size`` pixels high or wide are refused (the entry's ``min_input_size``).
    """

    def __init__(self, size: int | None = 320, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, min_size: int | None = None) -> None:
        super().__init__()
        check_input_args(1.0, min_size)
        self.min_size = min_size
        self.size = size
        self.normalize = Normalize(mean, std)

    def forward(self, rgb: Tensor, depth: Tensor) -> tuple[Tensor, Tensor]:
        x = to_float_batch(rgb, "rgb", min_size=self.min_size)
        d = _depth_batch(depth).to(x.dtype)
        if d.shape[0] != x.shape[0] or d.shape[-2:] != x.shape[-2:]:
            raise InputError(f"rgb {tuple(x.shape)} and depth {tuple(d.shape)} must have the same batch and size")
        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            size = (self.size, self.size)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            d = F.interpolate(d, size=size, mode="bilinear", align_corners=False)
        return self.normalize(x), d


class SaliencyPostprocess(nn.Module):
    """Saliency logits (B, 1, h, w) -> sigmoid -> bilinear upsampling to ``size`` -> (B, H, W) in [0, 1]."""

    def forward(self, logits: Tensor, size: Sequence[int]) -> Tensor:
        if not isinstance(logits, Tensor) or logits.dim() != 4 or logits.shape[1] != 1:
            raise InputError(f"saliency logits must be B x 1 x h x w, got {getattr(logits, 'shape', type(logits))}")
        size = tuple(int(s) for s in size[-2:])
        prob = logits.sigmoid()
        if tuple(prob.shape[-2:]) != size:
            prob = F.interpolate(prob, size=size, mode="bilinear", align_corners=False)
        return prob[:, 0]


# ------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def evaluate_saliency(model: nn.Module, dataset: Dataset, *, transforms: nn.Module | None = None,
                      postprocess: nn.Module | None = None, device: str | torch.device = "cpu",
                      max_samples: int | None = None, normalize: bool = True) -> dict[str, Any]:
    """S-measure, max / mean / adaptive F-measure and MAE of an RGB-D saliency model (HDFNet).

    ``dataset``: samples with ``image`` (3, H, W) and ``depth`` (1, H, W) in [0, 1] and ``mask`` (H', W')
    bool (:class:`zoo.data.RGBDSaliency`). The model is called as ``model(*transforms(rgb, depth))``
    and its postprocess upsamples the map to the GT size. ``normalize``: min-max normalise each map
    before scoring (PySODMetrics; see :mod:`zoo.saliency`).
    """
    transforms = transforms if transforms is not None else model.transforms
    postprocess = postprocess if postprocess is not None else model.postprocess

    def score(s: Mapping[str, Any]) -> dict[str, Any]:
        rgb, depth, gt = s["image"].unsqueeze(0).to(device), s["depth"].unsqueeze(0).to(device), s["mask"]
        pred = postprocess(model(*transforms(rgb, depth)), gt.shape[-2:])[0].float().cpu()
        return {"mae": float(mae(pred, gt, normalize)), "s_measure": float(s_measure(pred, gt, normalize=normalize)),
                "adaptive_f": float(f_measure_adaptive(pred, gt, normalize=normalize)),
                "curve": f_measure_curve(pred, gt, normalize=normalize).tolist()}

    rows = run_samples(model, dataset, max_samples, ("image", "depth", "mask"), "saliency evaluation", score)
    if not rows:
        raise ValueError("saliency evaluation over zero images")
    n = len(rows)
    curve = torch.tensor([r.pop("curve") for r in rows], dtype=torch.float64).mean(0)
    return {"task": SALIENT_OBJECT_DETECTION.name, "images": n,
            "s_measure": sum(r["s_measure"] for r in rows) / n, "max_f": float(curve.max()),
            "mean_f": float(curve.mean()), "adaptive_f": sum(r["adaptive_f"] for r in rows) / n,
            "mae": sum(r["mae"] for r in rows) / n, "per_image": rows}


# ------------------------------------------------------------------------------------ inputs and zoo predict
def rgbd_inputs(make: Any, batch: int, lead: Sequence[int], height: int, width: int) -> tuple[Any, ...]:
    """``(rgb (B, 3, H, W), depth (B, 1, H, W))`` for ``input_size [4, H, W]``, else one image tensor."""
    if list(lead) == [4]:
        return make(batch, 3, height, width), make(batch, 1, height, width)
    return image_inputs(make, batch, lead, height, width)


def _draw(model: nn.Module, images: list[Tensor], options: Any) -> tuple[Tensor, dict[str, Any]]:
    rgb, depth = images[0].unsqueeze(0), images[1][:1].unsqueeze(0).float() / 255.0
    saliency = model.postprocess(model(*model.transforms(rgb, depth)), rgb.shape[-2:])   # (1, H, W)
    return (saliency[0] * 255).round().clamp(0, 255).to(torch.uint8), {"mean_saliency": round(float(saliency.mean()), 4)}


SALIENT_OBJECT_DETECTION = Task(
    name="salient-object-detection",
    headline_metrics=("MAE", "max F", "S-measure"),
    raw_inputs=lambda lead, h, w: (RawInput("rgb", (3, h, w), "uint8 RGB in [0, 255]"),
                                   RawInput("depth", (1, h, w), "uint8 depth in [0, 255]")),
    input_names=("rgb", "depth"),
    pipeline_tag="image-segmentation",
    usage=(
        "rgb = read_image(\"image.jpg\").unsqueeze(0)                 # uint8, B x 3 x H x W\n"
        "depth = read_image(\"depth.png\")[:1].unsqueeze(0) / 255.0    # B x 1 x H x W in [0, 1]\n"
        "saliency = model.postprocess(model(*model.transforms(rgb, depth)), rgb.shape[-2:])  # B x H x W in [0, 1]"
    ),
    transforms={"rgbd-saliency": RGBDSaliencyTransforms},
    postprocess={"rgbd-saliency": SaliencyPostprocess},
    example_inputs=rgbd_inputs,
    evaluator=evaluate_saliency,
    metrics=("s_measure", "max_f", "mean_f", "adaptive_f", "mae", "per_image"),
    predict=Predict(draw=_draw, inputs="an RGB image and its depth map", num_inputs=2),
)
