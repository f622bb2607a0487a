"""Image classification: the ``classification`` presets, top-k evaluation, the cross-entropy training
step (with shift augmentation) and ``zoo predict``'s top-k summary.

Transforms: the usual ImageNet evaluation protocol (torchvision / fyu/drn ``classify.py``): resize the
shorter side to ``resize`` (256, bilinear with antialiasing), centre crop ``crop`` x ``crop`` (224),
then :class:`zoo.tasks.preprocess.Normalize` (ImageNet RGB mean/std in [0, 1] by default).

Post-processing: softmax over the class logits and the ``top_k`` best classes, as
``{"scores": (B, k) probabilities, "labels": (B, k) int64 class indices}``, best first.
Both read only shapes, never tensor values (no host sync; traceable).

Evaluation (:func:`evaluate_classification`): ``top1`` / ``top5`` = fraction of images whose label (the
folder's class index, sorted names) is among the k best of the postprocess's softmax top-k;
``per_class`` top-1 by class name.

Training: cross-entropy of the logits (B, K) against the integer labels (``{"image", "label"}``
samples: :class:`zoo.data.Digits`, ImageFolder) through the whole transforms preset (as evaluation);
the logged metric is the batch's ``top1``. Optional augmentation ``augment_shift`` = s
(:class:`ClassificationStream`): the image is zero-padded by s pixels on every side and cropped back to
``size`` at an offset seeded by (seed, p), i.e. a random translation of up to +-s pixels (no flips:
digits are not mirror-symmetric); images of another size are cropped (or zero-padded) to ``size`` at
that offset.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from zoo.data.positions import PositionStream
from zoo.errors import InputError
from zoo.tasks.base import Predict, Task, Training, TrainingRun, run_samples
from zoo.tasks.preprocess import IMAGENET_MEAN, IMAGENET_STD, Normalize, check_input_args, resize_shorter_side, to_float_batch

__all__ = ["IMAGE_CLASSIFICATION", "IMAGENET_MEAN", "IMAGENET_STD", "ClassificationPostprocess",
           "ClassificationTransforms", "ClassificationStream", "center_crop", "evaluate_classification"]


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Central ``size`` x ``size`` window of B x C x H x W images (offsets rounded as torchvision)."""
    h, w = images.shape[-2:]
    if h < size or w < size:
        raise InputError(f"center_crop: images of size {h}x{w} are smaller than the crop {size}; resize them first")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return images[..., top:top + size, left:left + size]


class ClassificationTransforms(nn.Module):
    """Images (B x 3 x H x W uint8 [0, 255] or float [0, 1], RGB) -> (B, 3, crop, crop) network input.

    ``resize=None`` skips the resize, ``crop=None`` the crop (then any image size passes through).
    ``mean``/``std``/``pixel_range``/``channel_order`` as :class:`zoo.tasks.preprocess.Normalize`;
    images below ``min_size`` pixels high or wide are refused (the entry's ``min_input_size``).
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 resize: int | None = 256, crop: int | None = 224, pixel_range: float = 1.0,
                 channel_order: str = "rgb", min_size: int | None = None):
        super().__init__()
        check_input_args(1.0, min_size)
        self.min_size = min_size
        if resize is not None and crop is not None and crop > resize:
            raise ValueError(f"crop ({crop}) must not exceed resize ({resize})")
        self.resize, self.crop = resize, crop
        self.normalize = Normalize(mean, std, pixel_range, channel_order)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = to_float_batch(images, min_size=self.min_size)
        if self.resize is not None:
            x = resize_shorter_side(x, self.resize)
        if self.crop is not None:
            x = center_crop(x, self.crop)
        return self.normalize(x)


class ClassificationPostprocess(nn.Module):
    """Logits (B, K) (or a dict with ``"out"``) -> ``{"scores": (B, k), "labels": (B, k)}``, softmax top-k.

    ``size`` (the image size the segmentation postprocess takes) is accepted and ignored, so every
    preset is called the same way: ``postprocess(model(x), images.shape[-2:])``.
    """

    def __init__(self, top_k: int = 5):
        super().__init__()
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.top_k = top_k

    def forward(self, output: torch.Tensor | Mapping[str, Any], size: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
        logits = output["out"] if isinstance(output, Mapping) else output
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            raise InputError(f"classification logits must be B x K, got {getattr(logits, 'shape', type(logits))}")
        k = min(self.top_k, logits.shape[1])
        scores, labels = logits.float().softmax(dim=1).topk(k, dim=1)
        return {"scores": scores, "labels": labels}


# ------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def evaluate_classification(model: nn.Module, dataset: Dataset, *, transforms: nn.Module | None = None,
                            postprocess: nn.Module | None = None, device: str | torch.device = "cpu",
                            max_samples: int | None = None, topk: Sequence[int] = (1, 5)) -> dict[str, Any]:
    """Top-k accuracies of a classifier on a dataset of ``{"image", "label"}`` samples (ImageFolder).

    ``postprocess`` defaults to the ``classification`` preset with ``top_k = max(topk)`` (the model's
    own may keep fewer classes); a k above the number of classes counts every image as a hit.
    """
    ks = sorted({int(k) for k in topk})
    if not ks or ks[0] < 1:
        raise ValueError(f"topk must be positive integers, got {list(topk)}")
    transforms = transforms if transforms is not None else model.transforms
    postprocess = postprocess if postprocess is not None else ClassificationPostprocess(top_k=ks[-1])

    def score(s: Mapping[str, Any]) -> dict[str, Any]:
        image = s["image"].unsqueeze(0).to(device)
        output = model(transforms(image))
        logits = output["out"] if isinstance(output, Mapping) else output
        label, num_classes = int(s["label"]), logits.shape[-1]
        if label >= num_classes:
            raise InputError(f"sample {s.get('id')} has class index {label}, but the model predicts "
                             f"{num_classes} classes")
        ranked = postprocess(output, image.shape[-2:])["labels"][0].tolist()
        return {"label": label, "pred": int(ranked[0]),
                **{f"top{k}": label in ranked[:k] or k >= num_classes for k in ks}}

    rows = run_samples(model, dataset, max_samples, ("image", "label"), "classification evaluation", score)
    if not rows:
        raise ValueError("classification evaluation over zero images")
    n = len(rows)
    out: dict[str, Any] = {"task": IMAGE_CLASSIFICATION.name, "images": n}
    for k in ks:
        out[f"top{k}"] = sum(r[f"top{k}"] for r in rows) / n
    names = list(getattr(dataset, "classes", [])) or None
    per_class: dict[str, list[int]] = {}
    for r in rows:
        key = names[r["label"]] if names else str(r["label"])
        hits = per_class.setdefault(key, [0, 0])
        hits[0] += int(r["pred"] == r["label"])
        hits[1] += 1
    out["per_class"] = {c: h / t for c, (h, t) in sorted(per_class.items())}
    out["per_image"] = rows
    return out


# ------------------------------------------------------------------------------------ training
class ClassificationStream(PositionStream):
    """:class:`PositionStream` for ``{"image", "label": int}`` samples: the image, zero-padded by ``shift``
    pixels per side, is cropped to ``size`` at an offset seeded by (seed, p) (a random translation of up
    to +-shift pixels); ``label`` becomes an int64 scalar tensor."""

    def __init__(self, base: Dataset, seed: int, size: tuple[int, int], shift: int = 0) -> None:
        if shift < 0:
            raise ValueError(f"augment_shift must be >= 0, got {shift}")
        super().__init__(base, seed, size)
        self.shift = shift

    def __getitem__(self, p: int) -> dict:
        sample = self.base[self.index(p)]
        image = sample["image"]
        if self.shift:
            image = F.pad(image, (self.shift,) * 4)
        out = self._crop({"image": image}, p)
        out["label"] = torch.as_tensor(sample["label"], dtype=torch.int64)
        return out

    def __getitems__(self, positions: Sequence[int]) -> list[dict]:
        return [self[p] for p in positions]


def _stream(base: Dataset, seed: int, size: tuple[int, int], options: Mapping[str, Any]) -> Dataset:
    return ClassificationStream(base, seed, size, options.get("augment_shift", 0))


def _training_step(model: nn.Module, batch: Mapping[str, Tensor], run: TrainingRun) -> tuple[Tensor, Tensor]:
    outputs = model(run.transforms(batch["image"]))
    logits = outputs["out"] if isinstance(outputs, dict) else outputs
    loss = F.cross_entropy(logits, batch["label"])
    with torch.no_grad():
        top1 = (logits.detach().argmax(dim=1) == batch["label"]).float().mean()
    return loss, top1


# ------------------------------------------------------------------------------------ zoo predict
def _draw(model: nn.Module, images: list[Tensor], options: Any) -> tuple[Tensor, dict[str, Any]]:
    batch = images[0].unsqueeze(0)
    top = model.postprocess(model(model.transforms(batch)))
    return batch[0], {"labels": top["labels"][0].tolist(), "scores": [round(float(v), 4) for v in top["scores"][0]]}


IMAGE_CLASSIFICATION = Task(
    name="image-classification",
    headline_metrics=("top-1", "acc@1", "top1", "top1_error"),
    pipeline_tag="image-classification",
    usage=(
        "images = read_image(\"image.jpg\").unsqueeze(0)   # uint8, B x 3 x H x W\n"
        "top = model.postprocess(model(model.transforms(images)))  # {'scores', 'labels'}: top-k per image"
    ),
    transforms={"classification": ClassificationTransforms},
    postprocess={"classification": ClassificationPostprocess},
    evaluator=evaluate_classification,
    metrics=("top1", "top5", "per_class"),
    training=Training(step=_training_step, metric="top1", stream=_stream, keep_resize=True),
    predict=Predict(draw=_draw),
)
