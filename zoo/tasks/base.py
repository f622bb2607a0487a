"""What a task is to zoo: :class:`Task` and the parts of it (:class:`Training`, :class:`Predict`), plus
the helpers the task modules share (example inputs, the evaluation loop over a dataset's samples).

A task module (``zoo/tasks/<task>.py``) defines one ``Task``; :mod:`zoo.tasks` lists them. Everything
that depends on the task is found through its ``Task``: the registry's preset names, the inputs used
for tests and FLOP counts, evaluation, the training step and ``zoo predict``. Nothing here imports a
model, the registry or the machinery above the tasks (factory, evaluation, training, CLI).
"""
from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from zoo.data.positions import PositionStream
from zoo.data.positions import collate as stack_samples
from zoo.distributed import gather_lists, rank_indices
from zoo.errors import InputError

__all__ = ["Task", "Training", "TrainingRun", "Predict", "RawInput", "image_inputs", "rgb_images", "image_input",
           "position_stream", "run_samples"]

TensorMaker = Callable[..., Tensor]


def image_inputs(make: TensorMaker, batch: int, lead: Sequence[int], height: int, width: int) -> tuple[Any, ...]:
    """One ``(batch, *lead, height, width)`` tensor (``lead`` is ``input_size`` without H and W)."""
    return (make(batch, *lead, height, width),)


class RawInput(NamedTuple):
    """One input of a task's transforms as a user feeds it: its name, its shape without the batch
    dimension, and its values in words."""

    name: str
    shape: tuple[int, ...]
    values: str


def rgb_images(lead: Sequence[int], height: int, width: int) -> tuple[RawInput, ...]:
    """The raw input of the image tasks: one batch of uint8 RGB images."""
    return (RawInput("images", (3, height, width), "uint8 RGB in [0, 255]"),)


DEFAULT_USAGE = (
    "x = model.transforms(images)   # batched uint8 or float tensors, any device\n"
    "out = model.postprocess(model(x), images.shape[-2:])"
)


def image_input(transforms: nn.Module, batch: Mapping[str, Tensor]) -> Any:
    """The network input of a collated batch of ``{"image", ...}`` samples: ``transforms(batch["image"])``."""
    return transforms(batch["image"])


def position_stream(base: Dataset, seed: int, size: tuple[int, int], options: Mapping[str, Any]) -> Dataset:
    """The plain :class:`~zoo.data.positions.PositionStream` (random crops to ``size``, no augmentation)."""
    return PositionStream(base, seed, size)


@dataclasses.dataclass
class TrainingRun:
    """What a training step reads besides the (possibly DDP-wrapped) model and the batch.

    ``network``: the plain model (its attributes, e.g. FlowNet's ``div_flow``); ``transforms``: the
    training transforms (:attr:`Training.keep_resize`); ``options``: the run's configuration as a mapping
    (``zoo.training.TrainConfig`` fields, e.g. ``aux_weight``); ``class_weight``: per-class loss weights
    when the run asked for them (:attr:`Training.class_weights`).
    """

    network: nn.Module
    transforms: nn.Module
    postprocess: nn.Module
    options: Mapping[str, Any]
    class_weight: Tensor | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Training:
    """How ``zoo.training`` trains a model of a task.

    ``step(model, batch, run) -> (loss, metric)``: the loss to minimise and the detached training metric
    called ``metric`` in the log. ``network_input(transforms, batch)``: what the model is called with
    (also used to recompute BatchNorm statistics). ``stream(base, seed, size, options)``: the dataset of
    sample positions the run reads (augmentation included). ``keep_resize``: train through the whole
    transforms preset (else without its ``resize``, which would misalign dense targets).
    ``crop_multiple``: training crops must be multiples of this. ``class_weights(stream, num_classes)``:
    the median-frequency class weights (``--class-weights``), None when the task has none.
    ``collate(samples) -> batch``: the stream's samples -> one dict of tensors (stacked by default;
    detection pads its variable-size images and instance lists).
    """

    step: Callable[[nn.Module, Mapping[str, Tensor], TrainingRun], tuple[Tensor, Tensor]]
    metric: str
    network_input: Callable[[nn.Module, Mapping[str, Tensor]], Any] = image_input
    stream: Callable[[Dataset, int, tuple[int, int], Mapping[str, Any]], Dataset] = position_stream
    keep_resize: bool = False
    crop_multiple: int = 1
    class_weights: Callable[[Dataset, int], Tensor] | None = None
    collate: Callable[[list[dict]], dict[str, Tensor]] = stack_samples


@dataclasses.dataclass(frozen=True, kw_only=True)
class Predict:
    """How ``zoo predict`` runs a model of a task on image files.

    ``inputs``: what it takes, in words ("two frames"); ``num_inputs``: how many files.
    ``check(name, images, paths)``: raise :class:`zoo.errors.ZooError` for inputs the model cannot take
    (before it is built). ``draw(model, images, options) -> (picture, summary)``: run the model on the
    3 x H x W uint8 images and return the 3 x H x W (or H x W) uint8 picture and a JSON-able summary;
    ``options`` has the command's ``alpha``, ``score_threshold`` and ``flo``.
    """

    draw: Callable[[nn.Module, list[Tensor], Any], tuple[Tensor, dict[str, Any]]]
    inputs: str = "one image"
    num_inputs: int = 1
    check: Callable[[str, list[Tensor], Sequence[str]], None] | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Task:
    """One task: a registry entry's ``task`` names it (:data:`zoo.tasks.TASKS`).

    ``transforms`` / ``postprocess``: the presets (registry ``preset`` name -> nn.Module class) the task
    defines. ``example_inputs(make, batch, lead, height, width)``: network inputs (after transforms) built
    with ``make(*shape)`` from an entry's ``input_size`` = ``[*lead, height, width]``, as positional
    arguments of ``model(*inputs)``, for tests and FLOP counts. ``evaluator(model, dataset, **options)``:
    the metrics of a model on a dataset (keys ``metrics``); ``evaluates_without_model``: it also runs
    with ``model=None`` (a baseline). ``headline_metrics``: registry metric names that head comparisons,
    in order of preference. ``training`` / ``predict``: None when zoo does not train / predict the task.

    ``raw_inputs(lead, height, width)``: what the transforms take as a user feeds them (exported programs
    with transforms, their input contract); ``input_names``: the network's positional inputs, named.
    ``detector``: the network follows torchvision's detector contract (a list of images it resizes
    itself; in training mode it also needs the targets). ``pipeline_tag``: the Hugging Face Hub pipeline
    tag of the cards, None when the Hub has none for the task. ``usage``: the Python lines of the cards'
    Usage section, after ``model = zoo.create(...)``.
    """

    name: str
    headline_metrics: tuple[str, ...]
    transforms: Mapping[str, type[nn.Module]]
    postprocess: Mapping[str, type[nn.Module]]
    example_inputs: Callable[[TensorMaker, int, Sequence[int], int, int], tuple[Any, ...]] = image_inputs
    evaluator: Callable[..., dict[str, Any]] | None = None
    metrics: tuple[str, ...] = ()
    evaluates_without_model: bool = False
    training: Training | None = None
    predict: Predict | None = None
    raw_inputs: Callable[[Sequence[int], int, int], tuple[RawInput, ...]] = rgb_images
    input_names: tuple[str, ...] = ("images",)
    detector: bool = False
    pipeline_tag: str | None = None
    usage: str = DEFAULT_USAGE

    @property
    def words(self) -> str:
        """The name as words ("optical flow"), for messages."""
        return self.name.replace("-", " ")

    def evaluate(self, model: nn.Module | None, dataset: Dataset, **options: Any) -> dict[str, Any]:
        """The task's metrics of ``model`` on ``dataset``; options the evaluator does not take (e.g.
        ``num_classes`` outside segmentation) are dropped."""
        if self.evaluator is None:
            raise ValueError(f"no evaluation for task {self.name!r}")
        if model is None and not self.evaluates_without_model:
            raise ValueError(f"{self.name} evaluation needs a model")
        accepted = inspect.signature(self.evaluator).parameters
        return self.evaluator(model, dataset, **{k: v for k, v in options.items() if k in accepted})


# ------------------------------------------------------------------------------------ evaluation loop
def check_sample(sample: Mapping[str, Any], keys: Sequence[str], what: str) -> None:
    """:class:`InputError` unless ``sample`` has every key in ``keys``."""
    missing = [k for k in keys if k not in sample]
    if missing:
        raise InputError(f"{what} needs samples with {list(keys)}; this dataset's samples lack {missing} "
                         f"(it has {sorted(sample)})")


def run_samples(model: nn.Module, dataset: Dataset, max_samples: int | None, keys: Sequence[str], what: str,
                score: Callable[[Mapping[str, Any]], dict[str, Any]]) -> list[dict[str, Any]]:
    """``model`` in eval mode over this rank's samples: check ``keys``, one row ``{"index", "id",
    **score(sample)}`` per sample; the rows of every rank, sorted by index. The mode is restored."""
    was_training = model.training
    model.eval()
    rows = []
    try:
        with torch.no_grad():
            for i in rank_indices(len(dataset), max_samples):
                s = dataset[i]
                check_sample(s, keys, what)
                rows.append({"index": i, "id": str(s.get("id", i)), **score(s)})
    finally:
        if was_training:
            model.train()
    return sorted(gather_lists(rows), key=lambda r: r["index"])
