"""COCO's label space, shared by the detection models, their converters and the COCO reader.

COCO 2017 has 80 object categories with ids 1..90 (ten ids unused); torchvision's detectors (and zoo's)
predict 91 classes indexed by category id with background 0, while mmdet, Detectron and AdelaiDet
number the 80 categories 0..79 contiguously.
"""
from __future__ import annotations

__all__ = ["COCO_IDS", "COCO_NUM_IDS"]

#: COCO category id of each of the 80 contiguous classes (mmdet's / AdelaiDet's class k -> torchvision label).
COCO_IDS: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33,
    34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60,
    61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)
COCO_NUM_IDS = 91  # rows of a classifier indexed by category id: background 0 and ids 1..90
