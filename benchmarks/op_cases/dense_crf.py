"""Dense CRF (zoo.ops.dense_crf): the windowed fast path vs the plain N x N kernel-matrix reference.

64 x 64 keeps the reference's (N, N) matrices at 67 MB each (N = 4096); the fast path's cost grows with
H W x offsets, the reference's with (H W)^2.
"""
from __future__ import annotations

import torch

from benchmarks._bench import Case
from zoo.ops.dense_crf import dense_crf, dense_crf_reference

# deeplabv2-lsdfn-small's postprocess (registry.yaml)
SMALL = dict(iterations=10, pos_weight=3.0, pos_xy_std=1.0, bi_weight=40.0, bi_xy_std=67.0, bi_rgb_std=12.0,
             bi_radius=5, bi_dilation=4)


def _crf(classes: int, size: int, options: dict):
    def setup():
        torch.manual_seed(0)
        logits = torch.randn(1, classes, size, size) * 3
        image = torch.rand(1, 3, size, size) * 255
        return {"fast": lambda: dense_crf(logits, image, **options),
                "reference": lambda: dense_crf_reference(logits, image, **options)}

    return setup


def cases() -> list[Case]:
    return [
        Case("DenseCRF", "K=7 64x64 deeplabv2-lsdfn-small (radius 5 offsets 4 px apart)", _crf(7, 64, SMALL)),
        Case("DenseCRF", "K=21 64x64 radius 3 offsets 1 px apart", _crf(21, 64, {**SMALL, "bi_radius": 3, "bi_dilation": 1})),
    ]
