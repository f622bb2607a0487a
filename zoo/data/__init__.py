"""Datasets for training and evaluation: procedural generators and readers of the real layouts.

- :class:`FlyingShapes` (optical flow, FlyingChairs-like pairs with exact flow) and :class:`Shapes`
  (semantic segmentation): seeded, deterministic per (seed, index), vectorised for streaming.
- :class:`FlyingChairs`, :class:`Middlebury`, :class:`VOCSegmentation`: readers of the real layouts.
- :func:`texture_pool`: photo textures (scikit-image, ``pip install dynzoo[train]``) or procedural ones.

Samples are dicts: flow datasets give ``image1``, ``image2`` (3, H, W) float in [0, 1], ``flow``
(2, H, W) pixels and ``valid`` (H, W) bool; segmentation datasets give ``image`` and ``label`` (H, W)
int64 with 255 = ignore.
"""
from zoo.data.flying_shapes import FlyingShapes
from zoo.data.readers import FlyingChairs, Middlebury, VOCSegmentation
from zoo.data.shapes import Shapes
from zoo.data.textures import texture_pool

__all__ = ["FlyingShapes", "Shapes", "FlyingChairs", "Middlebury", "VOCSegmentation", "texture_pool"]


def dataset_from_spec(spec: str, *, size: tuple[int, int] | None = None, seed: int = 0,
                      split: str | None = None, textures: str = "auto"):
    """A dataset from a command-line spec.

    ``flying-shapes[:N]`` / ``shapes[:N]`` (procedural, N samples, default 1e9 / 10000; ``size`` (H, W)
    and ``seed`` apply), ``flyingchairs:PATH``, ``middlebury:PATH``, ``voc:PATH``; a real-data spec
    may end in ``@SPLIT`` (``voc:PATH@train``, ``flyingchairs:PATH@val``, ``@all`` for every item of a
    folder without a split file), else ``split`` is used.
    """
    kind, _, rest = spec.partition(":")
    if kind in ("flying-shapes", "shapes"):
        cls = FlyingShapes if kind == "flying-shapes" else Shapes
        kwargs = {"seed": seed, "textures": textures}
        if size is not None:
            kwargs["size"] = tuple(size)
        length = int(float(rest)) if rest else (10**9 if kind == "flying-shapes" else 10000)
        return cls(length=length, **kwargs)
    path, at, part = rest.rpartition("@") if "@" in rest else (rest, "", "")
    part = None if part == "all" else (part or split)
    if not path:
        raise ValueError(f"dataset spec {spec!r}: give a folder, e.g. '{kind}:/data/{kind}'")
    if kind == "flyingchairs":
        return FlyingChairs(path, split=part)
    if kind == "middlebury":
        return Middlebury(path)
    if kind == "voc":
        return VOCSegmentation(path, split=part)
    raise ValueError(f"unknown dataset spec {spec!r}; use flying-shapes[:N], shapes[:N], flyingchairs:PATH, "
                     "middlebury:PATH or voc:PATH[@split]")


__all__.append("dataset_from_spec")
