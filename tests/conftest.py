"""Shared fixtures: the in-process Hub server, a small user-registered model, the real sample data."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from support.hub_server import hf_cache, hub_no_backoff, hub_server  # noqa: F401  (fixtures)
from support.olah_check import olah  # noqa: F401  (fixture; skips unless ZOO_OLAH_CLI is set)
from support.site_entries import site_entries  # noqa: F401  (fixture: the site tests' registry)

ROOT = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("ZOO_REALDATA", ROOT.parent / "shared" / "realdata"))


@pytest.fixture
def realdata() -> Path:
    """../shared/realdata, or skip: those files are never copied into the repository."""
    if not REALDATA.is_dir():
        pytest.skip(f"real sample data not found at {REALDATA} (set ZOO_REALDATA)")
    return REALDATA


@pytest.fixture(autouse=True)
def _isolated_zoo_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own verification-stamp cache and no user mirrors."""
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path_factory.mktemp("zoo-cache")))
    monkeypatch.delenv("ZOO_WEIGHTS_MIRROR", raising=False)


# --- a small model registered the way users register theirs ------------------------------------------
class SmallSegNet(nn.Module):
    """Stem conv + BN + ReLU, zoo's ASPP (v3) and a 1x1 classifier: real ops, tiny widths."""

    def __init__(self, num_classes: int = 5, width: int = 8):
        super().__init__()
        from zoo.ops.aspp import ASPP

        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.aspp = ASPP(width, width, (1, 2, 3), mode="v3", dropout=0.0)
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.aspp(self.stem(x)))


def small_segnet(*, num_classes: int = 5, width: int = 8) -> nn.Module:
    return SmallSegNet(num_classes, width)


SMALL_ENTRY = {
    "task": "semantic-segmentation",
    "arch": "test_small_segnet",
    "args": {"num_classes": 5, "width": 8},
    "classifier": ["classifier"],
    "paper": {"title": "Rethinking Atrous Convolution for Semantic Image Segmentation",
              "authors": "Liang-Chieh Chen, George Papandreou, Florian Schroff, Hartwig Adam",
              "venue": "arXiv preprint", "year": 2017, "arxiv": "1706.05587"},
    "license": "apache-2.0",
    "card": "test-small-segnet.md",
    "input_size": [3, 33, 33],
    "transforms": {"preset": "segmentation", "args": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}},
    "postprocess": {"preset": "segmentation"},
    "exportable": True,
    "weights": {"default": None, "tags": {}},
}


@pytest.fixture
def user_registry(monkeypatch):
    """A fresh default registry with ``test-small-segnet`` added (no weights) and its arch registered.

    Returns ``add(name, weights=None)`` to register further entries (e.g. after publishing)."""
    import copy

    import zoo
    import zoo.registry as R
    from zoo.registry import parse_entry

    zoo.register_arch("test_small_segnet", small_segnet, replace=True)
    fresh = R.Registry()
    for info in R.default_registry():
        fresh.add(info)
    fresh.tables = R.default_registry().tables
    monkeypatch.setattr(R, "_REGISTRY", fresh)

    def add(name: str = "test-small-segnet", weights: dict | None = None):
        entry = copy.deepcopy(SMALL_ENTRY)
        if weights:
            entry["weights"] = weights
        info = parse_entry(name, entry, "tests/conftest.py")
        fresh.add(info, replace=True)
        return info

    add()
    return add
