"""Semantic segmentation: the ``segmentation`` presets, mIoU evaluation, the cross-entropy training step
and ``zoo predict``'s colour-coded label map.

- Transforms: optional resize of the shorter side, then :class:`zoo.tasks.preprocess.Normalize`.
- Postprocess: logits upsampled bilinearly to the image size, then the argmax label map; the
  ``segmentation-crf`` preset runs DeepLab v2's fully connected CRF on the input images before the argmax
  (so the postprocess takes the images: ``postprocess(logits, size, images)``).
- Evaluation (:func:`evaluate_segmentation`): the confusion matrix over pixels whose label is not 255;
  ``miou`` = mean IoU over the classes present in the labels or the predictions (nanmean, as the VOC
  evaluation), ``pixel_accuracy`` = correct / labelled pixels, ``iou`` per class (null when the class
  never occurs). Under ``torch.distributed`` the confusion matrices of the ranks are summed.
- Training (:func:`segmentation_loss`): cross-entropy with ``ignore_index=255`` on logits upsampled
  bilinearly to the label size (torchvision's reference); a DeepLab v3 ``{"out", "aux"}`` output adds
  ``aux_weight`` (0.5) x the aux loss; a DeepLab v2 list of multi-scale logits sums the losses with labels
  nearest-downsampled to each logit size (kazuto1011's MSC training). Optional median-frequency class
  weights (:func:`median_frequency_weights`). The logged metric is the batch's pixel accuracy.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from zoo.distributed import rank_and_world, rank_indices
from zoo.errors import InputError
from zoo.ops.dense_crf import DenseCRF
from zoo.tasks.base import Predict, Task, Training, TrainingRun
from zoo.tasks.preprocess import Normalize, check_input_args, resize_shorter_side, to_float_batch

__all__ = ["SEMANTIC_SEGMENTATION", "SegmentationTransforms", "SegmentationPostprocess", "SegmentationCRFPostprocess", "evaluate_segmentation",
           "segmentation_loss", "median_frequency_weights", "CLASS_WEIGHT_SAMPLES"]

IGNORE_INDEX = 255
CLASS_WEIGHT_SAMPLES = 256  # training samples that median-frequency class weights are estimated on


class SegmentationTransforms(nn.Module):
    """Images -> network input for semantic segmentation.

    Input: B x 3 x H x W uint8 [0, 255] or float [0, input_range] RGB (a single 3 x H x W image is batched),
    at least ``min_size`` pixels high and wide (checks: :func:`to_float_batch`). Optional resize of the
    shorter side to ``resize``, then :class:`Normalize`. ``pixel_range`` is the scale the network expects
    (Caffe-trained DeepLab v2: ``channel_order='bgr'``, ``pixel_range=255``, std 1); ``input_range`` is the
    scale of float input (1: [0, 1], 255: [0, 255]).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], pixel_range: float = 1.0,
                 channel_order: str = "rgb", resize: int | None = None, input_range: float = 1.0,
                 min_size: int | None = None):
        super().__init__()
        check_input_args(input_range, min_size)
        self.resize, self.input_range, self.min_size = resize, input_range, min_size
        self.normalize = Normalize(mean, std, pixel_range, channel_order)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = to_float_batch(images, input_range=self.input_range, min_size=self.min_size)
        if self.resize is not None:
            x = resize_shorter_side(x, self.resize)
        return self.normalize(x)


class SegmentationPostprocess(nn.Module):
    """Logits (B x K x h x w, or a dict with 'out') -> label map B x H x W (int64) at ``size``.

    Logits are upsampled bilinearly to ``size`` (the input image size) before the argmax. ``images`` (the
    input images) is accepted for a common call signature with :class:`SegmentationCRFPostprocess` and unused.
    """

    def upsampled_logits(self, output: torch.Tensor | Mapping[str, Any], size: Sequence[int]) -> torch.Tensor:
        logits = output["out"] if isinstance(output, Mapping) else output
        if not isinstance(logits, torch.Tensor) or logits.dim() != 4:
            raise InputError(f"segmentation logits must be B x K x h x w, got {getattr(logits, 'shape', type(logits))}")
        size = tuple(int(s) for s in size[-2:])
        if tuple(logits.shape[-2:]) != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits

    def forward(self, output: torch.Tensor | Mapping[str, Any], size: Sequence[int],
                images: torch.Tensor | None = None) -> torch.Tensor:
        return self.upsampled_logits(output, size).argmax(1)


class SegmentationCRFPostprocess(SegmentationPostprocess):
    """DeepLab v1/v2's post-processing: logits upsampled bilinearly to the image size, then the fully
    connected CRF (:func:`zoo.ops.dense_crf.dense_crf`, 10 mean-field iterations by default) on the input
    ``images``, then the argmax of its marginals -> label map B x H x W (int64).

    ``images``: the images given to the transforms, B x 3 x H x W uint8 [0, 255] or float [0, input_range]
    (the CRF's colour kernel reads them in 0..255); ``input_range`` is the transforms' (an entry that changes one
    changes both). The other arguments are :class:`zoo.ops.dense_crf.DenseCRF`'s.
    """

    def __init__(self, input_range: float = 1.0, **crf: Any) -> None:
        super().__init__()
        check_input_args(input_range, None)
        self.input_range = float(input_range)
        self.crf = DenseCRF(**crf)

    def forward(self, output: torch.Tensor | Mapping[str, Any], size: Sequence[int],
                images: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(images, torch.Tensor):
            raise InputError("the segmentation-crf postprocess needs the input images (a B x 3 x H x W tensor) for "
                             "its colour kernel: call model.postprocess(logits, images.shape[-2:], images)")
        logits = self.upsampled_logits(output, size)
        unit = to_float_batch(images, "segmentation-crf images", input_range=self.input_range)   # [0, 1]
        if unit.shape[0] != logits.shape[0] or unit.shape[-2:] != logits.shape[-2:]:
            raise InputError(f"segmentation-crf: images must have the logits' batch and H x W = size "
                             f"{tuple(logits.shape[-2:])}, got {tuple(unit.shape)}; pass the images given to "
                             "the transforms, and their size")
        return self.crf(logits, unit.to(device=logits.device, dtype=logits.dtype) * 255.0).argmax(1)


_ARGMAX = SegmentationPostprocess()


# ------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def evaluate_segmentation(model: nn.Module, dataset: Dataset, num_classes: int | None = None, *,
                          transforms: nn.Module | None = None, postprocess: nn.Module | None = None,
                          device: str | torch.device = "cpu", max_samples: int | None = None,
                          ignore_index: int = IGNORE_INDEX) -> dict[str, Any]:
    """Confusion matrix, mIoU and pixel accuracy of ``model`` on a segmentation dataset.

    ``num_classes`` defaults to the dataset's ``num_classes``, else the model's registry ``num_classes``.
    ``postprocess`` is called as ``postprocess(output, size, images)`` (a CRF postprocess reads the images).
    """
    num_classes = int(num_classes or getattr(dataset, "num_classes", None) or model.info.args.get("num_classes"))
    transforms = transforms if transforms is not None else model.transforms
    postprocess = postprocess if postprocess is not None else model.postprocess
    was_training = model.training
    model.eval()
    conf = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    for i in rank_indices(len(dataset), max_samples):
        s = dataset[i]
        image = s["image"].unsqueeze(0).to(device)
        label = s["label"].to(device).view(-1)
        pred = postprocess(model(transforms(image)), image.shape[-2:], image).view(-1)
        keep = (label != ignore_index) & (label >= 0) & (label < num_classes)
        idx = label[keep] * num_classes + pred[keep].clamp(0, num_classes - 1)
        conf += torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)
    if was_training:
        model.train()
    if rank_and_world()[1] > 1:
        dist.all_reduce(conf)
    conf = conf.cpu()
    tp = conf.diag().double()
    union = conf.sum(0).double() + conf.sum(1).double() - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))
    present = union > 0
    labelled = int(conf.sum())
    return {
        "task": SEMANTIC_SEGMENTATION.name,
        "images": len(dataset) if max_samples is None else min(len(dataset), max_samples),
        "labelled_pixels": labelled,
        "miou": float(iou[present].mean()) if bool(present.any()) else math.nan,
        "pixel_accuracy": float(tp.sum() / labelled) if labelled else math.nan,
        "iou": [None if math.isnan(v) else v for v in iou.tolist()],
        "confusion": conf.tolist(),
    }


# ------------------------------------------------------------------------------------ training
def segmentation_loss(output: Any, label: torch.Tensor, aux_weight: float = 0.5, ignore_index: int = IGNORE_INDEX,
                      weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy for the segmentation families' training outputs (see the module docstring);
    ``weight``: per-class weights (C,) as ``F.cross_entropy``'s (e.g. :func:`median_frequency_weights`)."""
    size = label.shape[-2:]

    def ce_up(logits: torch.Tensor) -> torch.Tensor:
        if logits.shape[-2:] != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return F.cross_entropy(logits, label, weight=weight, ignore_index=ignore_index)

    if isinstance(output, dict):
        loss = ce_up(output["out"])
        if "aux" in output:
            loss = loss + aux_weight * ce_up(output["aux"])
        return loss
    if isinstance(output, (list, tuple)):
        loss = label.new_zeros((), dtype=torch.float32)
        for logits in output:
            small = F.interpolate(label[:, None].float(), size=logits.shape[-2:], mode="nearest")[:, 0].long()
            loss = loss + F.cross_entropy(logits, small, weight=weight, ignore_index=ignore_index)
        return loss
    return ce_up(output)


def median_frequency_weights(labels: Sequence[torch.Tensor], num_classes: int,
                             ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Median frequency balancing (Eigen & Fergus, ICCV 2015; SegNet): weight_c = median_f / f_c, where
    f_c is class c's pixel count divided by the pixel count of the images in which c appears. Classes
    that never appear get weight 0. ``labels``: (H, W) int maps; returns (num_classes,) float32."""
    pixels = torch.zeros(num_classes, dtype=torch.float64)
    present = torch.zeros(num_classes, dtype=torch.float64)
    for label in labels:
        valid = label[label != ignore_index]
        counts = torch.bincount(valid.flatten(), minlength=num_classes)[:num_classes].double()
        pixels += counts
        present += (counts > 0).double() * valid.numel()
    freq = torch.where(present > 0, pixels / present.clamp(min=1), torch.zeros_like(pixels))
    median = freq[freq > 0].median()
    return torch.where(freq > 0, median / freq.clamp(min=1e-12), torch.zeros_like(freq)).float()


def stream_class_weights(stream: Dataset, num_classes: int) -> Tensor:
    """Median-frequency weights of the labels of the first :data:`CLASS_WEIGHT_SAMPLES` samples of ``stream``."""
    labels = [stream[p]["label"] for p in range(min(CLASS_WEIGHT_SAMPLES, len(stream)))]
    return median_frequency_weights(labels, num_classes)


def _training_step(model: nn.Module, batch: Mapping[str, Tensor], run: TrainingRun) -> tuple[Tensor, Tensor]:
    outputs = model(run.transforms(batch["image"]))
    label = batch["label"]
    loss = segmentation_loss(outputs, label, run.options["aux_weight"], weight=run.class_weight)
    with torch.no_grad():
        logits = outputs["out"] if isinstance(outputs, dict) else (
            outputs[-1] if isinstance(outputs, (list, tuple)) else outputs)
        pred = _ARGMAX(logits.detach(), label.shape[-2:])  # the network's own labels, no CRF
        keep = label != IGNORE_INDEX
        accuracy = ((pred == label) & keep).sum() / keep.sum().clamp(min=1)
    return loss, accuracy


# ------------------------------------------------------------------------------------ zoo predict
def _draw(model: nn.Module, images: list[Tensor], options: Any) -> tuple[Tensor, dict[str, Any]]:
    from zoo.visualize import blend, colourise_labels

    batch = images[0].unsqueeze(0)                                                    # (1, 3, H, W)
    labels = model.postprocess(model(model.transforms(batch)), batch.shape[-2:], batch)
    return blend(batch, colourise_labels(labels), alpha=options.alpha)[0], {"classes": labels.unique().tolist()}


SEMANTIC_SEGMENTATION = Task(
    name="semantic-segmentation",
    headline_metrics=("mIoU",),
    pipeline_tag="image-segmentation",
    usage=(
        "images = read_image(\"image.jpg\").unsqueeze(0)  # uint8, B x 3 x H x W\n"
        "logits = model(model.transforms(images))\n"
        "labels = model.postprocess(logits, images.shape[-2:], images)  # B x H x W class indices"
    ),
    transforms={"segmentation": SegmentationTransforms},
    postprocess={"segmentation": SegmentationPostprocess, "segmentation-crf": SegmentationCRFPostprocess},
    evaluator=evaluate_segmentation,
    metrics=("miou", "pixel_accuracy", "iou", "confusion"),
    training=Training(step=_training_step, metric="pixel_accuracy", class_weights=stream_class_weights),
    predict=Predict(draw=_draw),
)
