"""zoo.evaluation: flow metrics and the zero-flow baseline, segmentation mIoU, the CLI."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from zoo.data import FlyingShapes, Shapes
from zoo.evaluation import evaluate, evaluate_flow, evaluate_segmentation, main, parse_overrides


class _Oracle(nn.Module):
    """A 'model' whose transforms pass the sample through and whose output is a given answer."""

    def __init__(self, answers):
        super().__init__()
        self.answers, self.i = answers, 0
        object.__setattr__(self, "transforms", lambda x: x)
        object.__setattr__(self, "postprocess", lambda out, size, *images: out)

    def forward(self, x):
        out = self.answers[self.i]
        self.i += 1
        return out


def test_zero_flow_baseline_on_real_pairs(realdata):
    from zoo.data import FlyingChairs

    res = evaluate_flow(None, FlyingChairs(realdata / "flyingchairs" / "data"))
    assert res["pairs"] == 4 and res["zero_epe"] == pytest.approx(5.23, abs=0.005)
    assert "epe" not in res and 0 < res["zero_fl"] < 1


def test_flow_metrics_exact_and_offset():
    ds = FlyingShapes(length=3, size=(32, 48), seed=0, textures="procedural")
    gts = [ds[i]["flow"][None] for i in range(3)]
    perfect = evaluate_flow(_Oracle(gts), ds)
    assert perfect["epe"] == 0 and perfect["fl"] == 0 and perfect["epe_ratio"] == 0
    shifted = evaluate_flow(_Oracle([g + torch.tensor([3.0, 4.0]).view(1, 2, 1, 1) for g in gts]), ds)
    assert shifted["epe"] == pytest.approx(5.0, abs=1e-4) and shifted["epe_pixel"] == pytest.approx(5.0, abs=1e-4)
    assert [r["index"] for r in shifted["per_pair"]] == [0, 1, 2]


def test_segmentation_confusion_and_miou():
    ds = Shapes(length=2, size=(16, 16), seed=0, textures="procedural")
    labels = [ds[i]["label"] for i in range(2)]
    perfect = evaluate_segmentation(_Oracle([l[None] for l in labels]), ds, 7)
    assert perfect["miou"] == 1.0 and perfect["pixel_accuracy"] == 1.0
    zeros = evaluate_segmentation(_Oracle([torch.zeros_like(l)[None] for l in labels]), ds, 7)
    n = sum(l.numel() for l in labels)
    bg = sum(int((l == 0).sum()) for l in labels)
    present = len(torch.cat(labels).unique())
    assert zeros["pixel_accuracy"] == pytest.approx(bg / n)
    assert zeros["miou"] == pytest.approx((bg / n) / present)      # IoU(bg) = bg / n, others 0
    assert sum(map(sum, zeros["confusion"])) == n


def test_registry_model_and_cli(tmp_path):
    out = tmp_path / "eval.json"
    res = main(["--data", "flying-shapes:2", "--size", "64", "64", "--model", "flownets",
                "--arch-override", "width=0.0625", "--out", str(out), "--per-pair", "--threads", "1"])
    saved = json.loads(out.read_text())
    assert saved["pairs"] == 2 and saved["epe"] > 0 and saved["arch_overrides"] == {"width": 0.0625}
    assert saved["epe"] == pytest.approx(res["epe"]) and len(saved["per_pair"]) == 2


def test_cli_postprocess_choice_and_its_errors():
    """The entry's CRF postprocess by default; --postprocess segmentation gives the network's own labels;
    --postprocess-arg overrides one CRF argument; a bad one names the option."""
    pytest.importorskip("skimage", reason="the recorded procedural data has scikit-image's textures")
    base = ["--data", "shapes-flat:2", "--size", "48", "48", "--model", "deeplabv2-lsdfn-small", "--pretrained",
            "default", "--threads", "1"]
    with_crf, alone = main(base), main([*base, "--postprocess", "segmentation"])
    weak = main([*base, "--postprocess-arg", "bi_weight=0", "--postprocess-arg", "pos_weight=0"])
    assert alone["postprocess"] == "segmentation" and weak["postprocess_args"] == {"bi_weight": 0, "pos_weight": 0}
    assert weak["confusion"] == alone["confusion"]            # no pairwise term: the argmax of the softmax
    assert with_crf["confusion"] != alone["confusion"]
    with pytest.raises(SystemExit, match="--postprocess-arg.*bi_dilation"):
        main([*base, "--postprocess-arg", "bi_dilation=0"])


def test_parse_overrides():
    assert parse_overrides(["width=0.25", "batch_norm=true", "lsdfn={out_channels: 24}"]) == {
        "width": 0.25, "batch_norm": True, "lsdfn": {"out_channels": 24}}
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["width"])


def test_dispatch_errors(tmp_path):
    ds = Shapes(length=1, size=(8, 8), seed=0, textures="procedural")
    for task in ("semantic-segmentation", "object-detection", "salient-object-detection", "image-classification"):
        with pytest.raises(ValueError, match="needs a model"):
            evaluate(None, ds, task)
    with pytest.raises(ValueError, match="no evaluation for task 'depth'"):
        evaluate(_Oracle([]), ds, "depth")
    with pytest.raises(SystemExit, match="--model is required unless the data is optical flow .* or video"):
        main(["--data", "shapes:1", "--size", "8", "8"])
