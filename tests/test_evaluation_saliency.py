"""zoo.evaluation.evaluate_saliency and the RGB-D SOD reader: hand-worked S-measure / F-measure / MAE of
perfect and all-zero predictions on a tiny folder, agreement with zoo.saliency.SaliencyMetrics, and a
random HDFNet end to end on a real SSD sample (structure only)."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from torch import nn

from zoo.data import RGBDSaliency, dataset_from_spec
from zoo.errors import InputError
from zoo.evaluation import evaluate_saliency, main
from zoo.saliency import SaliencyMetrics


class _OracleSaliency(nn.Module):
    """model(rgb, depth) -> the next given (1, H, W) map; transforms and postprocess pass it through."""

    def __init__(self, answers):
        super().__init__()
        self.answers, self.i = answers, 0
        object.__setattr__(self, "transforms", lambda rgb, depth: (rgb, depth))
        object.__setattr__(self, "postprocess", lambda out, size: out)

    def forward(self, rgb, depth):
        assert rgb.shape[:2] == (1, 3) and depth.shape[:2] == (1, 1)
        out = self.answers[self.i]
        self.i += 1
        return out[None]


def _folder(tmp_path, masks):
    """SSD-like layout: RGB/<id>.jpg, depth/<id>.png (8-bit; the first one half size), GT/<id>.png."""
    for d in ("RGB", "depth", "GT"):
        (tmp_path / d).mkdir()
    for i, mask in enumerate(masks):
        h, w = mask.shape
        Image.new("RGB", (w, h), (90, 120, 30)).save(tmp_path / "RGB" / f"s{i}.jpg")
        Image.new("L", (w // 2, h // 2) if i == 0 else (w, h), 51).save(tmp_path / "depth" / f"s{i}.png")
        Image.fromarray((mask.numpy() * 255).astype("uint8"), "L").convert("1").save(tmp_path / "GT" / f"s{i}.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "RGB" / "no_gt.jpg")   # not in all three folders: skipped
    return tmp_path


def _gt():
    gt = torch.zeros(4, 4, dtype=torch.bool)
    gt[:3, :3] = True          # 9 of 16 pixels, centroid (1, 1) -> split after row / column 2
    return gt


def test_reader_layout(tmp_path):
    ds = dataset_from_spec(f"rgbd-sod:{_folder(tmp_path, [_gt(), _gt()])}")
    assert isinstance(ds, RGBDSaliency) and len(ds) == 2 and [i[0] for i in ds.items] == ["s0", "s1"]
    s = ds[0]
    assert s["image"].shape == (3, 4, 4) and s["depth"].shape == (1, 4, 4) and s["mask"].dtype == torch.bool
    torch.testing.assert_close(s["depth"], torch.full((1, 4, 4), 0.2))   # resized from 2 x 2 to the image
    assert torch.equal(s["mask"], _gt())
    with pytest.raises(ValueError, match="without @SPLIT"):
        dataset_from_spec(f"rgbd-sod:{tmp_path}@val")
    (tmp_path / "partial" / "RGB").mkdir(parents=True)
    (tmp_path / "partial" / "GT").mkdir()
    with pytest.raises(FileNotFoundError, match="no depth folder"):
        RGBDSaliency(tmp_path / "partial")


def test_perfect_and_all_zero_predictions(tmp_path):
    gt = _gt()
    ds = RGBDSaliency(_folder(tmp_path, [gt, gt]))
    perfect = evaluate_saliency(_OracleSaliency([gt.float(), gt.float()]), ds)
    assert perfect["images"] == 2 and perfect["mae"] == 0.0
    assert perfect["s_measure"] == pytest.approx(1.0, abs=1e-12)
    assert perfect["max_f"] == pytest.approx(1.0) and perfect["adaptive_f"] == pytest.approx(1.0)

    zero = evaluate_saliency(_OracleSaliency([torch.zeros(4, 4)] * 2), ds)
    # MAE = foreground fraction 9/16. S: S_object = 9/16 * 0 + 7/16 * 1 (background predicted perfectly);
    # S_region: only the top-left quadrant (all foreground, weight 4/16) scores 1 (SSIM of two constant
    # maps), the three mixed quadrants 0; S = (7/16 + 1/4) / 2 = 0.34375.
    assert zero["mae"] == pytest.approx(9 / 16)
    assert zero["s_measure"] == pytest.approx(0.34375)
    # adaptive threshold 2 * mean = 0 marks every pixel salient: P = 9/16, R = 1 (PySODMetrics' rule);
    # the 256-threshold curve has that value at t = 0 and 0 above
    f0 = 1.3 * (9 / 16) / (0.3 * 9 / 16 + 1)
    assert zero["adaptive_f"] == pytest.approx(f0) and zero["max_f"] == pytest.approx(f0)
    assert zero["mean_f"] == pytest.approx(f0 / 256)
    assert [r["id"] for r in zero["per_image"]] == ["s0", "s1"] and "curve" not in zero["per_image"][0]


def test_aggregation_equals_saliency_metrics(tmp_path):
    gt2 = torch.zeros(4, 4, dtype=torch.bool)
    gt2[1:, 2:] = True
    ds = RGBDSaliency(_folder(tmp_path, [_gt(), gt2]))
    torch.manual_seed(0)
    preds = [torch.rand(4, 4), torch.rand(4, 4)]
    res = evaluate_saliency(_OracleSaliency(preds), ds)
    ref = SaliencyMetrics()
    for p, g in zip(preds, [_gt(), gt2]):
        ref.update(p, g)
    expected = ref.compute()
    for key in ("mae", "s_measure", "adaptive_f", "max_f", "mean_f"):
        assert res[key] == pytest.approx(expected[key], abs=1e-12), key


def test_wrong_dataset():
    from zoo.data import Shapes

    with pytest.raises(InputError, match="depth"):
        evaluate_saliency(_OracleSaliency([]), Shapes(length=1, size=(8, 8), textures="procedural"))


def test_random_hdfnet_on_real_sample(realdata, tmp_path):
    out = tmp_path / "sod.json"
    torch.manual_seed(0)
    res = main(["--data", f"rgbd-sod:{realdata / 'rgbd_sod_SSD'}", "--model", "hdfnet-vgg16", "--transform-arg",
                "size=64", "--max-samples", "1", "--per-pair", "--threads", "1", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["task"] == "salient-object-detection" and saved["images"] == 1
    assert saved["transform_args"] == {"size": 64} and saved["per_image"][0]["id"] == "histrory10301"
    for key in ("s_measure", "max_f", "mean_f", "adaptive_f", "mae"):
        assert 0.0 <= saved[key] <= 1.0 and saved[key] == pytest.approx(res[key])
