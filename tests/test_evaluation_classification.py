"""zoo.evaluation.evaluate_classification and the ImageFolder reader: exact top-1 / top-5 accuracies of a
classifier whose predictions are known (nearest of 10 grey levels), directly and through the CLI with a
user-registered model."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from torch import nn

import zoo
from zoo.data import ImageFolder, dataset_from_spec
from zoo.errors import InputError
from zoo.evaluation import evaluate_classification, main
from zoo.tasks.image_classification import ClassificationTransforms

LEVELS = 10


class GreyLevelNet(nn.Module):
    """Logits of class k = -(mean grey - k / 9)^2: the ranking is by distance to the grey level k / 9."""

    def __init__(self, num_classes: int = LEVELS):
        super().__init__()
        self.register_buffer("levels", torch.arange(num_classes, dtype=torch.float32) / (LEVELS - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grey = x.mean(dim=(1, 2, 3))[:, None]
        return -100.0 * (grey - self.levels) ** 2


def grey_level_net(*, num_classes: int = LEVELS) -> nn.Module:
    return GreyLevelNet(num_classes)


ENTRY = {
    "task": "image-classification", "arch": "test_grey_level_net", "args": {"num_classes": LEVELS},
    "paper": {"title": "A test classifier", "authors": "zoo tests", "venue": "tests", "year": 2024,
              "url": "https://example.org"},
    "license": "apache-2.0", "card": "test-grey-level-net.md", "input_size": [3, 8, 8],
    "transforms": {"preset": "classification", "args": {"mean": [0, 0, 0], "std": [1, 1, 1], "resize": 8, "crop": 8}},
    "postprocess": {"preset": "classification", "args": {"top_k": 1}},
    "exportable": False, "weights": {"default": None, "tags": {}},
}


def _folder(root, samples):
    """samples: (class folder, grey level index, extension); images are 10 x 12 uniform grey."""
    for n, (cls, level, ext) in enumerate(samples):
        (root / cls).mkdir(parents=True, exist_ok=True)
        value = round(255 * level / (LEVELS - 1))
        Image.new("RGB", (12, 10), (value,) * 3).save(root / cls / f"img{n}{ext}")
    return root


# class folders "c0".."c9" = grey levels 0..9; the image of level 0 is nearest to c0, then c1, c2, c3, c4
SAMPLES = [("c0", 0, ".png"), ("c0", 0, ".jpg"), ("c3", 3, ".png"), ("c9", 9, ".png"),
           ("c4", 0, ".png"),   # wrong at top-1, its class is the 5th nearest: a top-5 hit
           ("c5", 0, ".png")]   # 6th nearest: a miss at top-5 too
CLASSES = [f"c{i}" for i in range(LEVELS)]


def _model():
    model = GreyLevelNet()
    object.__setattr__(model, "transforms", ClassificationTransforms(mean=(0, 0, 0), std=(1, 1, 1), resize=8, crop=8))
    return model


def test_reader(tmp_path):
    ds = dataset_from_spec(f"imagefolder:{_folder(tmp_path, SAMPLES)}")
    assert isinstance(ds, ImageFolder) and ds.classes == ["c0", "c3", "c4", "c5", "c9"] and len(ds) == 6
    assert [item[0] for item in ds.items][:2] == ["c0/img0.png", "c0/img1.jpg"]
    s = ds[2]
    assert s["label"] == 1 and s["image"].shape == (3, 10, 12) and s["id"] == "c3/img2.png"
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="without images"):
        ImageFolder(tmp_path)
    with pytest.raises(FileNotFoundError, match="class sub-folders"):
        ImageFolder(tmp_path / "c0")


def test_exact_topk(tmp_path):
    root = _folder(tmp_path, SAMPLES)
    for c in CLASSES:   # every grey level gets a folder, so folder index = grey level
        (root / c).mkdir(exist_ok=True)
        if not any((root / c).iterdir()):
            _folder(root, [(c, int(c[1:]), ".png")])
    ds = ImageFolder(root)
    assert ds.classes == CLASSES and len(ds) == 6 + 5
    res = evaluate_classification(_model(), ds)
    assert res["images"] == 11
    assert res["top1"] == pytest.approx(9 / 11) and res["top5"] == pytest.approx(10 / 11)
    assert res["per_class"]["c4"] == 0.0 and res["per_class"]["c5"] == 0.0 and res["per_class"]["c0"] == 1.0
    assert res["per_class"]["c1"] == 1.0 and len(res["per_class"]) == LEVELS
    wrong = {r["id"]: r["pred"] for r in res["per_image"] if not r["top1"]}
    assert wrong == {"c4/img4.png": 0, "c5/img5.png": 0}
    res = evaluate_classification(_model(), ds, topk=(1, 6), max_samples=6)
    # the first six: c0 (2 images), c1, c2, c3 right; the level-0 image in c4 is 5th nearest: a top-6 hit
    assert res["images"] == 6 and res["top1"] == pytest.approx(5 / 6) and res["top6"] == 1.0


def test_fewer_model_classes(tmp_path):
    ds = ImageFolder(_folder(tmp_path, SAMPLES))
    model = GreyLevelNet(num_classes=3)
    object.__setattr__(model, "transforms", _model().transforms)
    with pytest.raises(InputError, match="predicts 3 classes"):
        evaluate_classification(model, ds)
    model = GreyLevelNet(num_classes=5)   # 5 classes, top-5 covers everything
    object.__setattr__(model, "transforms", _model().transforms)
    assert evaluate_classification(model, ds, max_samples=4)["top5"] == 1.0


def test_cli_with_user_model(tmp_path, user_registry):
    import zoo.registry as R
    from zoo.registry import parse_entry

    zoo.register_arch("test_grey_level_net", grey_level_net, replace=True)
    R.default_registry().add(parse_entry("test-grey-level-net", ENTRY, "tests/test_evaluation_classification.py"))
    root = _folder(tmp_path / "data", SAMPLES)
    out = tmp_path / "cls.json"
    res = main(["--data", f"imagefolder:{root}", "--model", "test-grey-level-net", "--out", str(out)])
    saved = json.loads(out.read_text())
    # here the folder indices 0..4 are c0, c3, c4, c5, c9 while the model's classes are grey levels 0..9.
    # top-1: only the two c0 images (label 0, level 0). top-5: also the level-3 image (label 1; nearest
    # levels 3, 2, 4, 1, 5) and the two level-0 images in c4, c5 (labels 2, 3; nearest 0..4), not the
    # level-9 image in c9 (label 4; nearest 9..5).
    assert saved["task"] == "image-classification" and saved["images"] == 6 and "per_image" not in saved
    assert saved["top1"] == pytest.approx(2 / 6) and res["top1"] == saved["top1"]
    assert saved["top5"] == pytest.approx(6 / 6 - 1 / 6)
