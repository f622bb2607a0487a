"""The site tests' registry (tests/test_site.py, tests/test_site_browser.py): the ``site_entries`` fixture (made
available to every test by tests/conftest.py), three user entries with hand-written cards, and
:func:`index_data`, the index page's embedded model rows."""
from __future__ import annotations

import copy
import json
import re

import pytest
import torch
from torch import nn

import zoo
import zoo.cards as C
from zoo.registry import default_registry, parse_entry

HAND = {
    "Summary": "A **tiny** segmentation network for the site tests, built from zoo's ASPP and a 1x1 classifier; "
               "see [the DeepLab v3 paper](https://arxiv.org/abs/1706.05587). Not a <script>alert(1)</script> model.",
    "Architecture": "- stem: 3x3 conv, stride 2, BN, ReLU\n- ASPP (v3) with rates 1, 2, 3\n  - image pooling branch\n"
                    "- 1x1 classifier to `num_classes`",
    "Limitations": "Trained on nothing real: the numbers in the registry exist only to exercise the site, the "
                   "card renderer and the consistency tests of the zoo.",
}
REVISION = "0123456789abcdef0123456789abcdef01234567"
SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def hub_weights(tag: str, metrics: list[tuple[str, str, str, float]], extra: str | None = None) -> dict:
    tags = {tag: {"hub": {"repo": "zoo-test/site-model", "revision": REVISION, "file": "model.safetensors",
                          "sha256": SHA, "size": 123456}, "source": "made for the site tests", "license": "apache-2.0",
                  "metrics": [{"dataset": d, "split": s, "metric": m, "value": v, "measured": "`python eval.py`"}
                              for d, s, m, v in metrics]}}
    if extra:
        tags[extra] = {**copy.deepcopy(tags[tag]), "hub": {**tags[tag]["hub"], "revision": "f" * 40},
                       "metrics": [{"dataset": "COCO", "split": "val", "metric": "mIoU", "value": 12.5, "measured": "x"}]}
    return {"default": tag, "tags": tags}


class TinyClassifier(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


def tiny_classifier(*, num_classes: int = 10) -> nn.Module:
    return TinyClassifier(num_classes)


@pytest.fixture
def site_entries(user_registry, tmp_path, monkeypatch):
    """Three user entries (two tasks, two with weights and metrics) and a cards dir holding a card for
    every registry entry; returns the three user ModelInfos."""
    from conftest import SMALL_ENTRY  # here: tests/conftest.py imports this module for the fixture

    entry = {**copy.deepcopy(SMALL_ENTRY), "card": "test-small-segnet-voc.md",
             "weights": hub_weights("voc", [("VOC2012", "val", "mIoU", 71.3), ("VOC2012", "val", "pixel accuracy", 93.1)],
                                 "coco")}
    voc = parse_entry("test-small-segnet-voc", entry, "tests/test_site.py")
    default_registry().add(voc)
    zoo.register_arch("test_tiny_classifier", tiny_classifier, replace=True)
    entry = copy.deepcopy(SMALL_ENTRY)
    entry.update(task="image-classification", arch="test_tiny_classifier", args={"num_classes": 10},
                 classifier=["fc"], input_size=[3, 32, 32], card="test-tiny-classifier.md",
                 weights=hub_weights("in1k", [("ImageNet-1k", "val", "top-1", 55.5)]))
    cls = parse_entry("test-tiny-classifier", entry, "tests/test_site.py")
    default_registry().add(cls)
    cards = tmp_path / "cards"
    cards.mkdir()
    monkeypatch.setattr(C, "cards_dir", lambda: cards)
    for info in default_registry():
        assert not (cards / info.card).exists(), f"two entries share the card {info.card}"
        (cards / info.card).write_text(C.render_card(info, HAND), encoding="utf-8")
    return [zoo.model_info("test-small-segnet"), voc, cls]


def index_data(text: str) -> dict:
    m = re.search(r'<script type="application/json" id="zoo-index">(.*?)</script>', text, flags=re.S)
    return json.loads(m.group(1))
