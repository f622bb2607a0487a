"""Datasets for training and evaluation: procedural generators and readers of the real layouts.

- :class:`FlyingShapes` (optical flow, FlyingChairs-like pairs with exact flow) and :class:`Shapes`
  (semantic segmentation): seeded, deterministic per (seed, index), vectorised for streaming.
- :class:`FlyingChairs`, :class:`Middlebury`, :class:`VOCSegmentation`, :class:`CocoDetection`,
  :class:`RGBDSaliency`, :class:`ImageFolder`: readers of the real layouts.
- :class:`Interleave`: several datasets read in turn (a 1 : 1 mixture; specs joined by ``+``).
- :class:`Digits`: scikit-learn's bundled real handwritten digits (image classification, 10 classes).
- :class:`MovingDigits`: Moving-MNIST-style sequences of those digits (video prediction), seeded.
- :func:`texture_pool`: photo textures (scikit-image, ``pip install dynzoo[train]``) or procedural ones.

Samples are dicts: flow datasets give ``image1``, ``image2`` (3, H, W) float in [0, 1], ``flow``
(2, H, W) pixels and ``valid`` (H, W) bool; segmentation datasets give ``image`` and ``label`` (H, W)
int64 with 255 = ignore; COCO samples give ``image``, ``boxes`` (x1y1x2y2), ``labels`` (category ids);
RGB-D saliency samples ``image``, ``depth`` (1, H, W) in [0, 1] and ``mask`` (H, W) bool; image-folder
and digits samples ``image`` and ``label`` (int); moving-digits samples ``inputs`` (T_in, 1, H, W) and
``targets`` (T_out, 1, H, W) in [0, 1].
"""
import inspect
import re

from zoo.data.digits import Digits
from zoo.data.flying_shapes import FlyingShapes
from zoo.data.interleave import Interleave
from zoo.data.moving_digits import MovingDigits
from zoo.data.readers import CocoDetection, FlyingChairs, ImageFolder, Middlebury, RGBDSaliency, VOCSegmentation
from zoo.data.shapes import Shapes
from zoo.data.textures import texture_pool

__all__ = ["FlyingShapes", "Shapes", "FlyingChairs", "Middlebury", "VOCSegmentation", "CocoDetection", "RGBDSaliency",
           "ImageFolder", "Digits", "MovingDigits", "Interleave", "texture_pool"]


_PROCEDURAL = ("flying-shapes", "shapes", "shapes-flat", "moving-digits")
_KINDS = (*_PROCEDURAL, "flyingchairs", "middlebury", "voc", "coco", "rgbd-sod", "imagefolder", "digits")
_MIX_SEPARATOR = re.compile(r"\+(?=(?:%s)(?![\w-]))" % "|".join(map(re.escape, _KINDS)))  # not "1e+3", not "a+b/"


def dataset_from_spec(spec: str, *, size: tuple[int, int] | None = None, seed: int = 0,
                      split: str | None = None, textures: str = "auto"):
    """A dataset from a command-line spec.

    ``flying-shapes[:N]`` / ``shapes[:N]`` / ``shapes-flat[:N]`` (procedural, N samples, default 1e9 /
    10000; ``size`` (H, W) and ``seed`` apply; ``shapes-flat`` is :class:`Shapes` with a flat grey
    background), ``flyingchairs:PATH``, ``middlebury:PATH``, ``voc:PATH``, ``coco:PATH``,
    ``rgbd-sod:PATH``, ``imagefolder:PATH``; a real-data spec may end in ``@SPLIT`` (``voc:PATH@train``,
    ``flyingchairs:PATH@val``, ``@all`` for every item of a folder without a split file), else ``split``
    is used; for ``coco`` the part after ``@`` is the annotation json (``coco:PATH@instances_val2017.json``,
    a file name under ``PATH/annotations`` or a path), by default the single ``annotations/instances_*.json``.
    A procedural spec may end in ``?KEY=VALUE&KEY=VALUE`` with constructor arguments of its class
    (numbers, comma-separated for tuples), e.g. ``flying-shapes?object_motion=0.15,0.1,0.25``.
    ``digits[@train|@test|@all]``: scikit-learn's handwritten digits at 32 x 32 (:class:`Digits`; its fixed
    split, ``size`` and ``seed`` do not apply); bare ``digits`` is the train split when ``split`` is
    "train", else the test split (there is no separate validation split).
    ``moving-digits[:N][@train|@test][?KEY=VALUE...]``: N (default 10000) Moving-MNIST-style sequences
    (:class:`MovingDigits`) of the digits of that split (bare: the train digits when ``split`` is "train",
    else the test digits), ``seed`` applies, ``size`` must be square (default 64 x 64); options are
    constructor arguments, e.g. ``moving-digits:256@test?num_digits=1``.
    Specs joined by ``+`` are read in turn (:class:`Interleave`), dataset ``j`` at ``seed + j``, e.g.
    ``flying-shapes+flying-shapes?object_motion=0.15,0.1,0.4`` (half the samples with wider object motion).
    """
    parts = _MIX_SEPARATOR.split(spec)
    if len(parts) > 1:
        return Interleave([dataset_from_spec(part, size=size, seed=seed + j, split=split, textures=textures)
                           for j, part in enumerate(parts)])
    full = spec
    spec, _, query = spec.partition("?")
    if query and spec.partition(":")[0].partition("@")[0] not in _PROCEDURAL:
        raise ValueError(f"dataset spec {full!r}: only procedural datasets ({', '.join(_PROCEDURAL)}) take ?KEY=VALUE options")
    name, _, given_split = spec.partition("@")
    if name == "digits":
        return Digits(given_split or ("train" if split == "train" else "test"))
    if name.partition(":")[0] == "moving-digits":
        count, digit_split = name.partition(":")[2], given_split
        kwargs = {"seed": seed, "split": digit_split or ("train" if split == "train" else "test")}
        if size is not None:
            if size[0] != size[1]:
                raise ValueError(f"dataset spec {full!r}: moving digits are square, got size {tuple(size)}")
            kwargs["size"] = int(size[0])
        kwargs.update(_spec_options(full, query, MovingDigits))
        return MovingDigits(int(float(count)) if count else 10000, **kwargs)
    kind, _, rest = spec.partition(":")
    if kind in _PROCEDURAL:
        cls = FlyingShapes if kind == "flying-shapes" else Shapes
        kwargs = {"seed": seed, "textures": textures}
        if kind == "shapes-flat":
            kwargs["background"] = "flat"
        if size is not None:
            kwargs["size"] = tuple(size)
        length = int(float(rest)) if rest else (10**9 if kind == "flying-shapes" else 10000)
        kwargs.update(_spec_options(full, query, cls))
        return cls(length=length, **kwargs)
    path, at, given = rest.rpartition("@") if "@" in rest else (rest, "", "")
    part = None if given == "all" else (given or split)
    if not path:
        raise ValueError(f"dataset spec {spec!r}: give a folder, e.g. '{kind}:/data/{kind}'")
    if kind == "flyingchairs":
        return FlyingChairs(path, split=part)
    if kind == "middlebury":
        return Middlebury(path)
    if kind == "voc":
        return VOCSegmentation(path, split=part)
    if kind == "coco":
        return CocoDetection(path, annotations=given or None)
    if kind in ("rgbd-sod", "imagefolder") and given:
        raise ValueError(f"dataset spec {spec!r}: {kind} takes a folder without @SPLIT")
    if kind == "rgbd-sod":
        return RGBDSaliency(path)
    if kind == "imagefolder":
        return ImageFolder(path)
    raise ValueError(f"unknown dataset spec {spec!r}; use flying-shapes[:N], shapes[:N], shapes-flat[:N], "
                     "moving-digits[:N][@train|@test], flyingchairs:PATH, "
                     "middlebury:PATH, voc:PATH[@split], coco:PATH[@annotations.json], rgbd-sod:PATH, "
                     "imagefolder:PATH or digits[@train|@test]")


def _spec_options(spec: str, query: str, cls: type) -> dict:
    """``KEY=VALUE&...`` -> constructor kwargs of ``cls``; values are numbers or comma-separated tuples."""
    allowed = set(inspect.signature(cls).parameters) - {"length", "size", "seed", "self", "split"}
    options: dict = {}
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if not eq or key not in allowed:
            raise ValueError(f"dataset spec {spec!r}: option {item!r} is not KEY=VALUE with KEY one of "
                             f"{sorted(allowed)} (length, size and seed have their own arguments)")
        try:
            parts = [_number(v) for v in value.split(",")]
        except ValueError:
            options[key] = value
        else:
            options[key] = tuple(parts) if len(parts) > 1 else parts[0]
    return options


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


__all__.append("dataset_from_spec")
