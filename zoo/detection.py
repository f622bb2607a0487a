"""The "detection" transforms and postprocess presets (torchvision-style detectors: Faster / Mask R-CNN).

Design (torchvision's): the detector owns its geometric pre-processing. torchvision's
``GeneralizedRCNNTransform`` inside the model normalises with the ImageNet mean/std, resizes the shorter
side to ``min_size`` (800) with the longer side capped at ``max_size`` (1333), pads the batch to a
multiple of 32, and maps the detections back to the size of each image it was given. So the zoo
transforms only convert dtype and range and split the batch into the list of 3 x H x W images the model
takes; they never resize or normalise (doing it twice would change the result). Boxes and masks come
out of the model already at each input image's size; the postprocess filters by score and binarises the
mask probabilities.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from zoo.errors import InputError
from zoo.transforms import register_postprocess, register_transform, to_float_batch

__all__ = ["DetectionPostprocess", "DetectionTransforms"]


@register_transform("detection")
class DetectionTransforms(nn.Module):
    """Images -> the list of float 3 x H x W images in [0, 1] a torchvision detector takes.

    Input: a B x 3 x H x W (or 3 x H x W) tensor, uint8 in [0, 255] or float in [0, 1], RGB; or a list
    of 3 x H_i x W_i images of different sizes. Resizing and normalisation happen inside the model.
    """

    def forward(self, images: Tensor | Sequence[Tensor]) -> list[Tensor]:
        if isinstance(images, Tensor):
            return list(to_float_batch(images).unbind(0))
        if not isinstance(images, (list, tuple)) or not images:
            raise InputError("detection transforms take a B x 3 x H x W tensor or a non-empty list of 3 x H x W images")
        out = []
        for i, image in enumerate(images):
            if not isinstance(image, Tensor) or image.dim() != 3:
                raise InputError(f"images[{i}] must be a 3 x H x W tensor, got {getattr(image, 'shape', type(image))}")
            out.append(to_float_batch(image, f"images[{i}]")[0])
        return out


@register_postprocess("detection")
class DetectionPostprocess(nn.Module):
    """Detector output (list of dicts) -> per image ``{"boxes" (K, 4) x1y1x2y2 float, "scores" (K,),
    "labels" (K,) int64}`` (+ ``"masks"`` (K, H, W) bool) with ``scores >= score_threshold``.

    ``masks`` (torchvision's (K, 1, H, W) probabilities) are binarised at ``mask_threshold`` (0.5, as
    torchvision's references and mmdet). ``size`` is the input size (H, W) or one size per image; the
    detections are already at that size (see the module docstring), so it is only checked against the
    masks' size. Filtering uses a boolean mask (a data-dependent size, as every detector output).
    """

    def __init__(self, score_threshold: float = 0.0, mask_threshold: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= mask_threshold <= 1.0:
            raise ValueError(f"mask_threshold must be in [0, 1], got {mask_threshold}")
        self.score_threshold, self.mask_threshold = float(score_threshold), float(mask_threshold)

    def forward(self, output: Sequence[Mapping[str, Tensor]],
                size: Sequence[int] | Sequence[Sequence[int]] | None = None) -> list[dict[str, Tensor]]:
        if not isinstance(output, (list, tuple)) or not all(isinstance(o, Mapping) for o in output):
            raise InputError("detection postprocess takes the detector's eval output: a list of dicts with "
                             "'boxes', 'scores', 'labels' (call the model in eval mode)")
        sizes: list[Any] = [None] * len(output)
        if size is not None:
            if len(size) and isinstance(size[0], (list, tuple, torch.Size)):
                if len(size) != len(output):
                    raise InputError(f"got {len(size)} sizes for {len(output)} images")
                sizes = [tuple(int(v) for v in s[-2:]) for s in size]
            else:
                sizes = [tuple(int(v) for v in size[-2:])] * len(output)
        results = []
        for i, (det, hw) in enumerate(zip(output, sizes)):
            missing = {"boxes", "scores", "labels"} - set(det)
            if missing:
                raise InputError(f"output[{i}] lacks {sorted(missing)}")
            keep = det["scores"] >= self.score_threshold
            res = {"boxes": det["boxes"][keep], "scores": det["scores"][keep], "labels": det["labels"][keep]}
            if "masks" in det:
                masks = det["masks"]
                if hw is not None and tuple(masks.shape[-2:]) != hw:
                    raise InputError(f"output[{i}] masks are {tuple(masks.shape[-2:])}, not the input size {hw}; "
                                     "pass the size of the images given to the model")
                res["masks"] = masks[keep].flatten(0, masks.dim() - 3) > self.mask_threshold
            results.append(res)
        return results
