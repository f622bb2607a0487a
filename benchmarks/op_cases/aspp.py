"""ASPP (zoo.ops.aspp): fast path vs the plain per-branch reference, and torchvision's ASPP for v3."""
from __future__ import annotations

import torch

from benchmarks._bench import Case
from zoo.ops.aspp import ASPP, aspp_reference


def _v2(h: int, w: int):
    def setup():
        torch.manual_seed(0)
        m = ASPP(2048, 21, (6, 12, 18, 24), mode="v2").eval()
        x = torch.randn(1, 2048, h, w)
        return {"fast": lambda: m(x), "reference": lambda: aspp_reference(m, x)}

    return setup


def _v3(h: int, w: int, rates):
    def setup():
        from torchvision.models.segmentation.deeplabv3 import ASPP as TVASPP

        torch.manual_seed(0)
        m = ASPP(2048, 256, rates, mode="v3").eval()
        tv = TVASPP(2048, rates).eval()
        tv.load_state_dict(m.state_dict())
        x = torch.randn(1, 2048, h, w)
        return {"fast": lambda: m(x), "reference": lambda: aspp_reference(m, x), "torchvision": lambda: tv(x)}

    return setup


def cases() -> list[Case]:
    return [
        # DeepLab v2 at 513x513 (scale 1: 65x65 features) and the 0.5-scale input of a 321 crop (21x21,
        # where rate 24 >= 21 degenerates to a 1x1 conv)
        Case("ASPP", "v2 C=2048->21 rates 6/12/18/24 65x65", _v2(65, 65)),
        Case("ASPP", "v2 C=2048->21 rates 6/12/18/24 21x21", _v2(21, 21)),
        # DeepLab v3 / torchvision at output stride 8 (513 -> 65x65) and 16 (33x33)
        Case("ASPP", "v3 C=2048->256 rates 12/24/36 65x65", _v3(65, 65, (12, 24, 36))),
        Case("ASPP", "v3 C=2048->256 rates 6/12/18 33x33", _v3(33, 33, (6, 12, 18))),
        Case("ASPP", "v3 C=2048->256 rates 12/24/36 33x33 (degenerate 36)", _v3(33, 33, (12, 24, 36))),
    ]
