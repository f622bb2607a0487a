"""A small COCO instances folder written on the fly: images with coloured rectangles and the official json
(``annotations/instances_train.json``, ``images/train/``) whose annotations mix polygons, uncompressed RLE,
compressed RLE and a crowd region, for the COCO reader's masks and instance-segmentation training."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

#: per image: (id, height, width, [(category id, x1, y1, x2, y2, encoding, crowd)]); x2 / y2 exclusive pixels
IMAGES = [
    (5, 60, 80, [(1, 4, 6, 30, 40, "polygon", 0), (18, 40, 10, 76, 30, "rle", 0), (1, 50, 40, 70, 58, "crowd", 1)]),
    (9, 72, 64, [(18, 8, 8, 56, 28, "counts", 0), (1, 20, 34, 44, 70, "polygon", 0)]),
]
COLOURS = {1: (220, 40, 40), 18: (40, 60, 220)}


def write_coco(root: Path) -> Path:
    """Write the folder under ``root`` and return ``root``. Needs pycocotools (compressed RLE)."""
    from pycocotools import mask as mask_utils

    (root / "annotations").mkdir(parents=True)
    (root / "images" / "train").mkdir(parents=True)
    data = {"images": [], "annotations": [],
            "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]}
    for image_id, h, w, objects in IMAGES:
        pixels = np.full((h, w, 3), 128, np.uint8)
        name = f"{image_id:012d}.png"
        data["images"].append({"id": image_id, "file_name": name, "height": h, "width": w})
        for k, (cat, x1, y1, x2, y2, encoding, crowd) in enumerate(objects):
            pixels[y1:y2, x1:x2] = COLOURS[cat]
            binary = np.zeros((h, w), np.uint8, order="F")
            binary[y1:y2, x1:x2] = 1
            if encoding == "polygon":   # the outline of the pixel block: pycocotools fills it back exactly
                segmentation = [[x1, y1, x2, y1, x2, y2, x1, y2]]
            elif encoding == "counts":  # uncompressed RLE: column-major run lengths starting with zeros
                flat = binary.flatten(order="F")
                change = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
                segmentation = {"size": [h, w], "counts": np.diff(np.concatenate([[0], change])).tolist()}
            else:
                rle = mask_utils.encode(binary)
                segmentation = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
            data["annotations"].append({"id": 100 * image_id + k, "image_id": image_id, "category_id": cat,
                                        "iscrowd": crowd, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                        "area": (x2 - x1) * (y2 - y1), "segmentation": segmentation})
        Image.fromarray(pixels).save(root / "images" / "train" / name)
    (root / "annotations" / "instances_train.json").write_text(json.dumps(data))
    return root
