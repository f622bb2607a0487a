"""Readers for the real dataset layouts: FlyingChairs, Middlebury (flow) and PASCAL VOC (segmentation).

Every reader is a ``torch.utils.data.Dataset`` of dicts with the same keys and conventions as the
procedural datasets: images are (3, H, W) float32 RGB in [0, 1]; flow is (2, H, W) float32 in pixels
(:mod:`zoo.flow` conventions) with ``valid`` (H, W) bool = ground truth known (``|u|, |v| < 1e9`` and
finite); labels are (H, W) int64 with 255 = ignore. Each sample also carries ``"id"`` (a string).

- :class:`FlyingChairs`: a folder of ``NNNNN_img1.ppm, NNNNN_img2.ppm, NNNNN_flow.flo`` (the released
  dataset, ``FlyingChairs_release/data``) or ``NNNNNNN-img0.ppm, -img1.ppm, -gt.flo`` (the examples
  shipped with FlowNet 2.0). Optional ``split`` with the official ``FlyingChairs_train_val.txt`` (one
  line per pair in sorted order: 1 = train, 2 = validation).
- :class:`Middlebury`: ``other-data/<Seq>/frame10.png, frame11.png`` and
  ``other-gt-flow/<Seq>/flow10.flo`` (sequences without ground truth are skipped); unknown flow
  (>= 1e9) is masked by ``valid``.
- :class:`VOCSegmentation`: ``JPEGImages/<id>.jpg`` and ``SegmentationClass/<id>.png`` (palette PNG:
  the palette index is the class, 255 = boundary / ignore), ids from
  ``ImageSets/Segmentation/<split>.txt`` or every mask present. ``root`` may be the ``VOC2012`` folder
  or a ``VOCdevkit`` holding it. RGB masks (colour-coded with the VOC palette) are decoded too.
- :class:`CocoDetection`: a COCO-layout folder, ``annotations/instances_<split>.json`` (the official
  instance format) and the images under ``images/<split>/``, ``<split>/``, ``images/`` or the root.
  Samples carry the image and its boxes (x1y1x2y2 pixels, from COCO's xywh), category ids and crowd
  flags; :meth:`CocoDetection.instance_masks` decodes an image's instance masks (polygons and RLE, with
  pycocotools, as ``COCO.annToMask``) for training instance segmentation.
- :class:`RGBDSaliency`: RGB-D salient object detection benchmarks (SSD, NJU2K, NLPR, STERE, ... as
  released with D3Net / HDFNet): ``RGB/`` (or ``Image/``) ``<id>.jpg``, ``depth/`` (or ``Depth/``)
  ``<id>.png`` (8-bit, or 16-bit scaled by 1/65535) and ``GT/`` (or ``Mask/``) ``<id>.png`` binarised
  at 128. A depth map of another size is resized bilinearly to the image (as HDFNet's loader).
- :class:`ImageFolder`: ``root/<class name>/<image>``, classes indexed in sorted name order
  (torchvision's ``ImageFolder`` convention, which for ImageNet's wnid folders is the standard order).
"""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import torch
from torch.utils.data import Dataset

from zoo.errors import InputError
from zoo.flow import read_flo, valid_flow_mask
from zoo.io import read_image

__all__ = ["FlyingChairs", "Middlebury", "VOCSegmentation", "CocoDetection", "RGBDSaliency", "ImageFolder",
           "voc_colormap", "decode_voc_rgb", "read_label_png", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp")


def _rgb(path: Path) -> torch.Tensor:
    return read_image(path).float().div_(255.0)


def _flow_sample(id_: str, img1: Path, img2: Path, flo: Path) -> dict:
    image1, image2, flow = _rgb(img1), _rgb(img2), read_flo(flo)
    if image1.shape != image2.shape or image1.shape[-2:] != flow.shape[-2:]:
        raise InputError(f"pair {id_}: frames {tuple(image1.shape)}, {tuple(image2.shape)} and flow "
                         f"{tuple(flow.shape)} must share H x W")
    valid = valid_flow_mask(flow.unsqueeze(0))[0]
    flow = torch.where(valid.unsqueeze(0), flow, torch.zeros_like(flow))
    return {"id": id_, "image1": image1, "image2": image2, "flow": flow, "valid": valid}


class FlyingChairs(Dataset):
    """FlyingChairs pairs from ``root`` (both file namings; see the module docstring).

    ``split``: None (all pairs), ``"train"`` or ``"val"`` (needs ``split_file``, default
    ``root/../FlyingChairs_train_val.txt`` or ``root/FlyingChairs_train_val.txt``).
    """

    _NAMINGS = ((re.compile(r"^(\d+)_img1\.ppm$"), "{}_img1.ppm", "{}_img2.ppm", "{}_flow.flo"),
                (re.compile(r"^(\d+)-img0\.ppm$"), "{}-img0.ppm", "{}-img1.ppm", "{}-gt.flo"))

    def __init__(self, root: str | Path, split: str | None = None, split_file: str | Path | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"FlyingChairs folder {self.root} does not exist")
        names = sorted(p.name for p in self.root.iterdir())
        self.items: list[tuple[str, Path, Path, Path]] = []
        for pattern, f1, f2, ff in self._NAMINGS:
            for name in names:
                m = pattern.match(name)
                if m:
                    key = m.group(1)
                    paths = [self.root / f.format(key) for f in (f1, f2, ff)]
                    if all(p.is_file() for p in paths):
                        self.items.append((key, *paths))
        self.items.sort(key=lambda item: item[0])
        if not self.items:
            raise FileNotFoundError(f"no FlyingChairs pairs in {self.root} (expected NNNNN_img1.ppm, NNNNN_img2.ppm, "
                                    "NNNNN_flow.flo or NNNNNNN-img0.ppm, -img1.ppm, -gt.flo)")
        if split is not None:
            if split not in ("train", "val"):
                raise ValueError(f"split must be 'train', 'val' or None, got {split!r}")
            candidates = [Path(split_file)] if split_file else [self.root.parent / "FlyingChairs_train_val.txt",
                                                                self.root / "FlyingChairs_train_val.txt"]
            found = next((c for c in candidates if c.is_file()), None)
            if found is None:
                raise FileNotFoundError(f"split {split!r} needs FlyingChairs_train_val.txt; looked in "
                                        f"{', '.join(map(str, candidates))}")
            marks = found.read_text().split()
            if len(marks) != len(self.items):
                raise InputError(f"{found} has {len(marks)} entries but {self.root} holds {len(self.items)} pairs")
            want = "1" if split == "train" else "2"
            self.items = [item for item, mark in zip(self.items, marks) if mark == want]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return _flow_sample(*self.items[index])


class Middlebury(Dataset):
    """Middlebury ``other`` sequences with public ground truth (frame10 -> frame11)."""

    def __init__(self, root: str | Path, sequences: list[str] | None = None) -> None:
        self.root = Path(root)
        data, gt = self.root / "other-data", self.root / "other-gt-flow"
        if not data.is_dir() or not gt.is_dir():
            raise FileNotFoundError(f"Middlebury root {self.root} must hold other-data/ and other-gt-flow/")
        names = sequences or sorted(p.name for p in gt.iterdir() if (p / "flow10.flo").is_file())
        self.items = []
        for seq in names:
            paths = (data / seq / "frame10.png", data / seq / "frame11.png", gt / seq / "flow10.flo")
            if not all(p.is_file() for p in paths):
                if sequences:
                    raise FileNotFoundError(f"Middlebury sequence {seq!r}: missing {[str(p) for p in paths if not p.is_file()]}")
                continue
            self.items.append((seq, *paths))
        if not self.items:
            raise FileNotFoundError(f"no Middlebury sequences with ground truth under {self.root}")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return _flow_sample(*self.items[index])


def voc_colormap(n: int = 256) -> torch.Tensor:
    """The PASCAL VOC palette (n, 3) uint8 (bit-interleaved class index, as VOCdevkit's labelcolormap)."""
    cmap = torch.zeros(n, 3, dtype=torch.uint8)
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = torch.tensor([r, g, b], dtype=torch.uint8)
    return cmap


def decode_voc_rgb(mask: torch.Tensor, num_classes: int = 21) -> torch.Tensor:
    """(3, H, W) uint8 VOC-palette colours -> (H, W) int64 labels; the boundary colour (224, 224, 192)
    and any colour outside the first ``num_classes`` palette entries become 255."""
    cmap = voc_colormap(256).long()
    code = (mask.long() * torch.tensor([65536, 256, 1]).view(3, 1, 1)).sum(0)
    keys = (cmap * torch.tensor([65536, 256, 1])).sum(1)
    label = torch.full_like(code, 255)
    for c in range(num_classes):
        label = torch.where(code == keys[c], torch.full_like(label, c), label)
    return label


def read_label_png(path: str | Path, num_classes: int = 21) -> torch.Tensor:
    """A segmentation mask PNG as (H, W) int64: palette / grey indices as stored, RGB via the VOC palette."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in ("P", "L"):
            data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
            return data.view(im.height, im.width).long()
        rgb = im.convert("RGB")
        data = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8).view(rgb.height, rgb.width, 3)
        return decode_voc_rgb(data.permute(2, 0, 1), num_classes)


class VOCSegmentation(Dataset):
    """PASCAL VOC semantic segmentation (21 classes, 255 = ignore)."""

    num_classes = 21

    def __init__(self, root: str | Path, split: str | None = "val") -> None:
        root = Path(root)
        if (root / "VOC2012").is_dir() and not (root / "JPEGImages").is_dir():
            root = root / "VOC2012"
        self.root = root
        images, masks = root / "JPEGImages", root / "SegmentationClass"
        if not images.is_dir() or not masks.is_dir():
            raise FileNotFoundError(f"VOC root {root} must hold JPEGImages/ and SegmentationClass/")
        if split is None:
            ids = sorted(p.stem for p in masks.glob("*.png"))
        else:
            list_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
            if not list_file.is_file():
                raise FileNotFoundError(f"VOC split {split!r}: {list_file} does not exist (split=None reads every mask)")
            ids = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
        self.items = [(i, images / f"{i}.jpg", masks / f"{i}.png") for i in ids]
        missing = [str(p) for _, a, b in self.items for p in (a, b) if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"VOC split {split!r}: {len(missing)} files missing, e.g. {missing[0]}")
        if not self.items:
            raise FileNotFoundError(f"no VOC segmentation samples under {root} (split {split!r})")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        id_, image_path, mask_path = self.items[index]
        image, label = _rgb(image_path), read_label_png(mask_path, self.num_classes)
        if image.shape[-2:] != label.shape:
            raise InputError(f"VOC sample {id_}: image {tuple(image.shape)} and mask {tuple(label.shape)} differ in size")
        return {"id": id_, "image": image, "label": label}


# ------------------------------------------------------------------------------------ COCO
class CocoDetection(Dataset):
    """COCO instances: an official-format annotation json and the images it lists.

    ``root``: the COCO folder. ``annotations``: the json (a path, or a file name under
    ``root/annotations/`` or ``root``); by default the single ``root/annotations/instances_*.json``.
    ``images``: the image folder; by default the first of ``images/<split>``, ``<split>``, ``images``,
    ``root`` (``<split>`` from ``instances_<split>.json``) or any sub-folder of ``root`` / ``images``
    that holds one of the listed images. Images listed in the json but absent on disk are an error
    unless ``skip_missing=True`` (then only the present ones are samples).

    Samples: ``{"id": str(image_id), "image_id": int, "image": (3, H, W) float in [0, 1],
    "boxes": (N, 4) float32 x1y1x2y2 pixels, "labels": (N,) int64 category ids, "iscrowd": (N,) bool}``
    in increasing image id order. ``annotation_file``, ``image_ids``, ``categories`` (id -> name) and
    :meth:`annotations_of` (the raw annotation dicts of an image) are there for the evaluation.
    """

    def __init__(self, root: str | Path, annotations: str | Path | None = None, images: str | Path | None = None,
                 skip_missing: bool = False) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"COCO folder {self.root} does not exist")
        self.annotation_file = self._find_annotations(annotations)
        data = json.loads(self.annotation_file.read_text())
        missing_keys = {"images", "annotations", "categories"} - set(data)
        if missing_keys:
            raise InputError(f"{self.annotation_file} is not a COCO instances file: it lacks {sorted(missing_keys)}")
        self.categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        infos = sorted(data["images"], key=lambda im: int(im["id"]))
        if not infos:
            raise InputError(f"{self.annotation_file} lists no images")
        self.image_dir = self._find_images(images, {im["file_name"] for im in infos})
        self._anns: dict[int, list[dict]] = {int(im["id"]): [] for im in infos}
        for ann in data["annotations"]:
            if int(ann["image_id"]) in self._anns:
                self._anns[int(ann["image_id"])].append(ann)
        present = [im for im in infos if (self.image_dir / im["file_name"]).is_file()]
        if len(present) < len(infos) and not skip_missing:
            absent = [im["file_name"] for im in infos if not (self.image_dir / im["file_name"]).is_file()]
            raise FileNotFoundError(f"{len(absent)} of the {len(infos)} images of {self.annotation_file.name} are "
                                    f"not in {self.image_dir} (e.g. {absent[0]}); use the annotation file of the "
                                    "images you have, or skip_missing=True")
        if not present:
            raise FileNotFoundError(f"none of the images of {self.annotation_file.name} is in {self.image_dir}")
        self.infos = present
        self.image_ids = [int(im["id"]) for im in present]

    def _find_annotations(self, annotations: str | Path | None) -> Path:
        folder = self.root / "annotations"
        if annotations is None:
            found = sorted(folder.glob("instances_*.json")) if folder.is_dir() else []
            if len(found) != 1:
                where = sorted(p.name for p in folder.glob("*.json")) if folder.is_dir() else []
                raise FileNotFoundError(f"COCO folder {self.root}: expected one annotations/instances_*.json, found "
                                        f"{where or 'none'}; name the file (coco:PATH@instances_val2017.json)")
            return found[0]
        for candidate in (Path(annotations), folder / str(annotations), self.root / str(annotations)):
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"COCO annotations {annotations!s} not found as a path, in {folder} or in {self.root}")

    def _find_images(self, images: str | Path | None, names: set[str]) -> Path:
        if images is not None:
            folder = Path(images) if Path(images).is_dir() else self.root / str(images)
            if not folder.is_dir():
                raise FileNotFoundError(f"COCO image folder {images!s} does not exist")
            return folder
        m = re.match(r"^instances_(.+)\.json$", self.annotation_file.name)
        candidates = [self.root / "images" / m.group(1), self.root / m.group(1)] if m else []
        candidates += [self.root / "images", self.root]
        for parent in (self.root / "images", self.root):
            if parent.is_dir():
                candidates += sorted(p for p in parent.iterdir() if p.is_dir())
        for candidate in candidates:
            if candidate.is_dir() and not names.isdisjoint(p.name for p in candidate.iterdir()):
                return candidate
        raise FileNotFoundError(f"COCO folder {self.root}: no folder holds any image of {self.annotation_file.name} "
                                f"(e.g. {min(names)}; looked in images/<split>, <split>, images/, the root and their "
                                "sub-folders)")

    def annotations_of(self, image_id: int) -> list[dict]:
        """The raw COCO annotation dicts of ``image_id`` (as in the json)."""
        return self._anns[int(image_id)]

    def instance_masks(self, index: int) -> torch.Tensor:
        """The masks of sample ``index``'s annotations, in the order of its ``boxes``: (N, H, W) bool.

        Polygons (a list of ``[x1, y1, x2, y2, ...]``), uncompressed RLE (``counts`` a list) and compressed
        RLE are decoded with ``pycocotools.mask`` exactly as ``COCO.annToRLE`` / ``annToMask`` do (the
        polygons of one annotation merged). Needs pycocotools (``pip install pycocotools``).
        """
        try:
            from pycocotools import mask as mask_utils
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("COCO instance masks need pycocotools: pip install pycocotools") from e
        info = self.infos[index]
        if "height" in info and "width" in info:
            h, w = int(info["height"]), int(info["width"])
        else:
            from PIL import Image

            with Image.open(self.image_dir / info["file_name"]) as im:
                w, h = im.size
        masks = torch.zeros(len(self._anns[int(info["id"])]), h, w, dtype=torch.bool)
        with warnings.catch_warnings():  # pycocotools' decoder under numpy 2: one harmless warning per mask
            warnings.filterwarnings("ignore", message="__array__ implementation doesn't accept a copy keyword",
                                    category=DeprecationWarning)
            for k, ann in enumerate(self._anns[int(info["id"])]):
                seg = ann.get("segmentation")
                if not seg:
                    continue
                if isinstance(seg, list):
                    rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
                elif isinstance(seg.get("counts"), list):
                    rle = mask_utils.frPyObjects(seg, h, w)
                else:
                    rle = seg
                masks[k] = torch.from_numpy(mask_utils.decode(rle).astype(bool))
        return masks

    def __len__(self) -> int:
        return len(self.infos)

    def __getitem__(self, index: int) -> dict:
        info = self.infos[index]
        image_id = int(info["id"])
        image = _rgb(self.image_dir / info["file_name"])
        if "height" in info and tuple(image.shape[-2:]) != (int(info["height"]), int(info["width"])):
            raise InputError(f"COCO image {info['file_name']} is {tuple(image.shape[-2:])}, the annotations say "
                             f"{(info['height'], info['width'])}")
        anns = self._anns[image_id]
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float64).view(-1, 4)
        boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1).float()
        return {"id": str(image_id), "image_id": image_id, "image": image, "boxes": boxes,
                "labels": torch.tensor([int(a["category_id"]) for a in anns], dtype=torch.int64),
                "iscrowd": torch.tensor([bool(a.get("iscrowd", 0)) for a in anns], dtype=torch.bool)}


# ------------------------------------------------------------------------------------ RGB-D SOD
def _one_of(root: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise FileNotFoundError(f"RGB-D saliency folder {root} has no {what} folder ({' / '.join(names)})")


def _by_stem(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}


def _read_depth(path: Path) -> torch.Tensor:
    """A depth map as (1, H, W) float in [0, 1]: 8-bit / 1 / 255, 16-bit / 1 / 65535, RGB via its first channel."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            wide = im.convert("I")  # 32-bit signed, native byte order
            data = torch.frombuffer(bytearray(wide.tobytes()), dtype=torch.int32).view(wide.height, wide.width)
            return (data.float() / 65535.0).clamp_(0, 1)[None]
        grey = im if im.mode == "L" else im.convert("RGB").getchannel(0)
        data = torch.frombuffer(bytearray(grey.tobytes()), dtype=torch.uint8).view(grey.height, grey.width)
        return data.float().div_(255.0)[None]


class RGBDSaliency(Dataset):
    """An RGB-D salient object detection test set (see the module docstring for the layout).

    Samples: ``{"id", "image": (3, H, W) float in [0, 1], "depth": (1, H, W) float in [0, 1] (resized
    bilinearly to the image when its size differs), "mask": (H', W') bool ground truth}``; the GT keeps
    its own size (the metrics are computed at the GT resolution). Ids are the file stems present in all
    three folders, sorted.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"RGB-D saliency folder {self.root} does not exist")
        rgb = _by_stem(_one_of(self.root, ("RGB", "Image", "image", "rgb"), "RGB"))
        depth = _by_stem(_one_of(self.root, ("depth", "Depth"), "depth"))
        gt = _by_stem(_one_of(self.root, ("GT", "Mask", "mask", "gt"), "GT"))
        ids = sorted(set(rgb) & set(depth) & set(gt))
        if not ids:
            raise FileNotFoundError(f"no sample of {self.root} has an RGB image, a depth map and a GT mask "
                                    f"({len(rgb)}, {len(depth)} and {len(gt)} files)")
        self.items = [(i, rgb[i], depth[i], gt[i]) for i in ids]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        id_, rgb_path, depth_path, gt_path = self.items[index]
        image, depth = _rgb(rgb_path), _read_depth(depth_path)
        if depth.shape[-2:] != image.shape[-2:]:
            depth = torch.nn.functional.interpolate(depth[None], size=image.shape[-2:], mode="bilinear",
                                                    align_corners=False)[0]
        mask = read_image(gt_path)[0] >= 128
        return {"id": id_, "image": image, "depth": depth, "mask": mask}


# ------------------------------------------------------------------------------------ classification
class ImageFolder(Dataset):
    """Images in ``root/<class name>/`` (files with :data:`IMAGE_EXTENSIONS`, any depth below the class
    folder); ``classes`` sorted by name and ``label`` = index in that order.

    Samples: ``{"id": "<class>/<relative path>", "image": (3, H, W) float in [0, 1], "label": int}``.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist")
        self.classes = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not self.classes:
            raise FileNotFoundError(f"image folder {self.root} has no class sub-folders "
                                    "(expected root/<class>/<image>)")
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.items: list[tuple[str, Path, int]] = []
        empty = []
        for c in self.classes:
            files = sorted(p for p in (self.root / c).rglob("*")
                           if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                empty.append(c)
            self.items += [(f"{c}/{p.relative_to(self.root / c).as_posix()}", p, self.class_to_idx[c]) for p in files]
        if empty:
            raise FileNotFoundError(f"image folder {self.root}: class folders without images: {empty[:5]}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        id_, path, label = self.items[index]
        return {"id": id_, "image": _rgb(path), "label": label}
