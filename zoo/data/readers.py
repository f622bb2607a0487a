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
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch.utils.data import Dataset

from zoo.errors import InputError
from zoo.flow import read_flo, valid_flow_mask
from zoo.io import read_image

__all__ = ["FlyingChairs", "Middlebury", "VOCSegmentation", "voc_colormap", "decode_voc_rgb", "read_label_png"]


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
