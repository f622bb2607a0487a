"""The CoupleNet Caffe layout is written out here from tshizys/CoupleNet's test_agnostic.prototxt (py-R-FCN's
ResNet-101: conv1, BatchNorm (3 blobs: mean, variance, factor) + Scale (gamma, beta) after every convolution,
res2a..res5c with blocks a,b1..bn for res3/res4, bias-free backbone convolutions, the names and shapes of
the MSRA ResNet-101 that tests/converters/test_deformable_convnets_rfcn.py writes out; rpn_conv/3x3, rpn_cls_score
(18), rpn_bbox_pred (36); conv_new_1; local_cls (21*49), local_bbox (8*49), conv/local_cls_score (21 -> 21),
conv_pool5 (7x7, 1024), conv_pool5_1, global_cls_score (21), global_bbox_pred (8)) and lib/fast_rcnn/train.py
(SolverWrapper.snapshot: local_bbox weight and bias * np.repeat(stds, 49), global_bbox_pred * stds, bias *
stds + means, stds = np.tile((0.1, 0.1, 0.2, 0.2), 2)), independently of zoo's model
(tshizys/CoupleNet@3187614dc35c4f52e560c6ad9f2550d37bae7b81)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zoo.converters.caffemodel import load_caffemodel
from zoo.converters.couplenet_caffe import convert, convert_key
from zoo.errors import StateDictMismatchError
from zoo.layers.rfcn import ps_roi_vote
from zoo.models.couplenet import couplenet
from support.random_weights import random_state_dict

from converters.test_caffemodel import blob_legacy, blob_new, field, string
from converters.test_deformable_convnets_rfcn import reference_shapes

STDS = [0.1, 0.1, 0.2, 0.2] * 2  # np.tile(BBOX_NORMALIZE_STDS, 2): class-agnostic, bg + fg deltas


def couplenet_shapes(num_classes: int = 21, num_anchors: int = 9) -> dict[str, tuple[int, ...]]:
    """Caffe ``<layer>.<blob>`` -> shape of every blob of the released CoupleNet ResNet-101. The backbone is
    the MSRA ResNet-101 whose names Deformable-ConvNets kept: its MXNet table renamed to Caffe's layers
    (``res*_weight`` -> ``res*.0``; ``bn*_moving_mean`` / ``_moving_var`` -> ``bn*.0`` / ``.1`` plus the
    factor ``bn*.2`` (1,); ``bn*_gamma`` / ``_beta`` -> the Scale layer ``scale*.0`` / ``.1``)."""
    shapes: dict[str, tuple[int, ...]] = {}
    blobs = {"moving_mean": ("bn", 0), "moving_var": ("bn", 1), "gamma": ("scale", 0), "beta": ("scale", 1)}
    for name, shape in reference_shapes().items():
        if name.startswith(("res", "conv1")):
            shapes[f"{name.removesuffix('_weight')}.0"] = shape
        elif name.startswith("bn"):
            layer, param = next((name.removesuffix(f"_{p}"), p) for p in blobs if name.endswith(f"_{p}"))
            kind, blob = blobs[param]
            shapes[f"{kind}{layer[2:]}.{blob}"] = shape
            if param == "moving_mean":
                shapes[f"{layer}.2"] = (1,)
    for name, shape in (("rpn_conv/3x3", (512, 1024, 3, 3)), ("rpn_cls_score", (2 * num_anchors, 512, 1, 1)),
                        ("rpn_bbox_pred", (4 * num_anchors, 512, 1, 1)), ("conv_new_1", (1024, 2048, 1, 1)),
                        ("local_cls", (49 * num_classes, 1024, 1, 1)), ("local_bbox", (49 * 8, 1024, 1, 1)),
                        ("conv_pool5", (1024, 1024, 7, 7)), ("conv_pool5_1", (1024, 1024, 1, 1)),
                        ("global_cls_score", (num_classes, 1024, 1, 1)), ("global_bbox_pred", (8, 1024, 1, 1)),
                        ("conv/local_cls_score", (num_classes, num_classes, 1, 1))):
        shapes[f"{name}.0"], shapes[f"{name}.1"] = shape, shape[:1]
    return shapes


def caffe_checkpoint(seed: int = 0, num_classes: int = 21) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(training values, the snapshot's file contents), BN factors 1."""
    src = random_state_dict(couplenet_shapes(num_classes), seed, cheap_above=1_000_000)
    for key in src:
        if key.startswith("bn") and key.endswith(".1"):
            src[key] = src[key].abs() + 0.5  # variances
        if key.startswith("bn") and key.endswith(".2"):
            src[key] = torch.ones(1)
    return src, snapshot(src)


def snapshot(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SolverWrapper.snapshot: the box layers scaled by the stds (means 0) before net.save."""
    out = dict(params)
    s = torch.tensor([v for v in STDS for _ in range(49)])  # np.repeat(stds, 392 / 8)
    out["local_bbox.0"] = params["local_bbox.0"] * s.view(-1, 1, 1, 1)
    out["local_bbox.1"] = params["local_bbox.1"] * s
    g = torch.tensor(STDS)  # np.repeat(stds, 8 / 8)
    out["global_bbox_pred.0"] = params["global_bbox_pred.0"] * g.view(-1, 1, 1, 1)
    out["global_bbox_pred.1"] = params["global_bbox_pred.1"] * g + 0.0
    return out


@pytest.fixture(scope="module")
def meta_model():
    with torch.device("meta"):
        model = couplenet()
    return model, {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def checkpoint():
    return caffe_checkpoint()


def test_names_and_shapes_load_strictly(meta_model, checkpoint):
    model, shapes = meta_model
    src, saved = checkpoint
    assert len(shapes) == 542 and len(saved) == 542 + 104  # + the factor blob of the 104 BatchNorm layers
    out = convert(saved)
    assert {k: tuple(v.shape) for k, v in out.items()} == shapes
    model.load_state_dict(out, strict=True, assign=True)
    assert out["backbone.body.layer3.22.conv3.weight"] is src["res4b22_branch2c.0"]
    assert out["backbone.body.layer2.3.bn2.weight"] is src["scale3b3_branch2b.0"]
    assert out["backbone.body.layer4.2.bn1.bias"] is src["scale5c_branch2a.1"]
    assert out["backbone.body.layer1.0.downsample.0.weight"] is src["res2a_branch1.0"]
    assert out["rpn.head.conv.weight"] is src["rpn_conv/3x3.0"]
    assert out["rpn.head.cls_logits.bias"] is src["rpn_cls_score.1"]
    assert out["roi_heads.rfcn_cls.weight"] is src["local_cls.0"]
    assert out["roi_heads.local_cls_conv.weight"] is src["conv/local_cls_score.0"]
    assert out["roi_heads.conv_pool5.weight"] is src["conv_pool5.0"]
    assert out["roi_heads.global_cls_score.bias"] is src["global_cls_score.1"]
    torch.testing.assert_close(out["backbone.body.bn1.running_var"], src["bn_conv1.1"])
    # conv1 reads RGB here, BGR in Caffe
    torch.testing.assert_close(out["backbone.body.conv1.weight"][:, 0], src["conv1.0"][:, 2])
    torch.testing.assert_close(out["backbone.body.conv1.weight"][:, 2], src["conv1.0"][:, 0])


def test_batchnorm_statistics_are_divided_by_the_factor(checkpoint):
    src, saved = checkpoint
    saved = {**saved, "bn3a_branch2b.2": torch.tensor([4.0]), "bn4b7_branch2a.2": torch.tensor([0.0])}
    out = convert(saved)
    torch.testing.assert_close(out["backbone.body.layer2.0.bn2.running_mean"], src["bn3a_branch2b.0"] / 4)
    torch.testing.assert_close(out["backbone.body.layer2.0.bn2.running_var"], src["bn3a_branch2b.1"] / 4)
    assert torch.count_nonzero(out["backbone.body.layer3.7.bn1.running_mean"]) == 0  # factor 0: Caffe uses 0
    assert out["backbone.body.layer2.0.bn2.weight"] is src["scale3a_branch2b.0"]  # Scale untouched


def test_box_std_scaling_is_undone_and_decodes_as_the_reference(meta_model, checkpoint):
    model, _ = meta_model
    src, saved = checkpoint
    out = convert(saved)
    for key, caffe in (("rfcn_bbox", "local_bbox"), ("global_bbox_pred", "global_bbox_pred")):
        torch.testing.assert_close(out[f"roi_heads.{key}.weight"], src[f"{caffe}.0"])
        torch.testing.assert_close(out[f"roi_heads.{key}.bias"], src[f"{caffe}.1"])
    # the reference tester reads bbox_pred = global + voted local of the saved weights, fg deltas 4:8, and
    # decodes them without stds; zoo divides the same sum of its weights by the box coder weights
    x = torch.randn(1, 1024, 6, 7)
    rois = torch.tensor([[0.0, 3.0, 5.0, 80.0, 70.0], [0.0, 20.0, 0.0, 95.0, 90.0]])
    pooled = torch.randn(2, 1024, 1, 1)  # stands for conv_pool5_1's output

    def bbox_pred(w_local, b_local, w_global, b_global):
        local = ps_roi_vote(F.conv2d(x, w_local, b_local), rois, 7, 1 / 16)
        return local + F.conv2d(pooled, w_global, b_global).flatten(1)

    ref = bbox_pred(saved["local_bbox.0"], saved["local_bbox.1"], saved["global_bbox_pred.0"],
                    saved["global_bbox_pred.1"])[:, 4:8]
    ours = bbox_pred(out["roi_heads.rfcn_bbox.weight"], out["roi_heads.rfcn_bbox.bias"],
                     out["roi_heads.global_bbox_pred.weight"], out["roi_heads.global_bbox_pred.bias"])[:, 4:8]
    weights = torch.tensor(model.roi_heads.box_coder.weights)
    assert weights.tolist() == [10.0, 10.0, 5.0, 5.0]
    torch.testing.assert_close(ours / weights, ref, rtol=1e-4, atol=1e-5)
    unscaled = convert(src, bbox_scaled=False)  # e.g. a raw solver state: passed through
    assert unscaled["roi_heads.rfcn_bbox.weight"] is src["local_bbox.0"]


def test_a_caffemodel_file_maps_through_the_reader(tmp_path):
    """Layer names with '/' and a legacy 4-D vector blob, through load_caffemodel."""
    w = torch.randn(21, 21, 1, 1)
    layers = [string(1, "conv/local_cls_score") + string(2, "Convolution") + field(7, 2, blob_new(w))
              + field(7, 2, blob_legacy(torch.randn(21))),
              string(1, "bn2a_branch1") + string(2, "BatchNorm") + field(7, 2, blob_new(torch.randn(256)))
              + field(7, 2, blob_new(torch.rand(256))) + field(7, 2, blob_new(torch.ones(1))),
              string(1, "rpn_conv/3x3") + string(2, "Convolution") + field(7, 2, blob_new(torch.randn(2, 1, 3, 3)))]
    path = tmp_path / "couplenet_iter_110000.caffemodel"
    path.write_bytes(b"".join(field(100, 2, layer) for layer in layers))
    state = load_caffemodel(path)
    assert state["conv/local_cls_score.1"].shape == (1, 1, 1, 21)  # legacy num/channels/height/width
    assert [convert_key(k) for k in state] == [
        "roi_heads.local_cls_conv.weight", "roi_heads.local_cls_conv.bias", "backbone.body.layer1.0.downsample.1.running_mean",
        "backbone.body.layer1.0.downsample.1.running_var", "backbone.body.layer1.0.downsample.1.factor",
        "rpn.head.conv.weight"]
    _, saved = caffe_checkpoint(1)
    out = convert({**saved, "conv/local_cls_score.1": state["conv/local_cls_score.1"]})
    assert out["roi_heads.local_cls_conv.bias"].shape == (21,)


def test_errors(checkpoint):
    _, saved = checkpoint
    for key in ("res4b1_branch1.0", "res2a_branch2a.1", "bn2a_branch2a.3", "scale2a_branch2a.2", "res6a_branch2a.0",
                "fc1000.0", "rfcn_cls.0", "conv1.1"):
        assert convert_key(key) is None, key
    with pytest.raises(StateDictMismatchError, match="1 unknown keys.*rfcn_cls.0"):
        convert({**saved, "rfcn_cls.0": torch.zeros(1)})
    with pytest.raises(StateDictMismatchError, match="'global_bbox_pred.1' missing"):
        convert({k: v for k, v in saved.items() if k != "global_bbox_pred.1"})
    with pytest.raises(StateDictMismatchError, match="'bn4b22_branch2c.2' missing"):  # a factor is required too
        convert({k: v for k, v in saved.items() if k != "bn4b22_branch2c.2"})
    with pytest.raises(StateDictMismatchError, match="expected 1"):
        convert({**saved, "bn_conv1.2": torch.ones(2)})
