"""The Deformable-ConvNets layout is written out here from rfcn/symbols/resnet_v1_101_rfcn.py
(get_resnet_v1_conv4/conv5: units (3, 4, 23, 3), blocks a,b,c for res2/res5 and a,b1..bn for res3/res4,
no_bias convolutions, BatchNorm gamma/beta + moving_mean/var; get_rpn; conv_new_1, rfcn_cls, rfcn_bbox)
and resnet_v1_101_rfcn_dcn.py (the same plus res5{a,b,c}_branch2b_offset: 72 filters 3x3 with bias,
rfcn_cls_offset_t: 2*7*7*num_classes filters 1x1, rfcn_bbox_offset_t: 7*7*2 filters 1x1) with the COCO
config (81 classes, 12 anchors, CLASS_AGNOSTIC) and rfcn/core/callback.py do_checkpoint (``*_test``
copies scaled by mx.nd.repeat(np.tile(BBOX_STDS, 2), 392 / 8)), independently of zoo's model
(msracver/Deformable-ConvNets@6aeda878a95bcb55eadffbe125804e730574de8d)."""
import pytest
import torch
import torch.nn.functional as F

import zoo
from zoo.converters.deformable_convnets_rfcn import convert, convert_key, is_dcn_key
from zoo.converters.mxnet_params import load_params, save_params
from zoo.errors import StateDictMismatchError
from zoo.layers.rfcn import RFCNRPNHead, ps_roi_vote
from zoo.models.rfcn import rfcn
from support.random_weights import random_state_dict

STDS = (0.1, 0.1, 0.2, 0.2)


def reference_shapes(num_classes: int = 81, num_anchors: int = 12, dcn: bool = False) -> dict[str, tuple[int, ...]]:
    """MXNet parameter name -> shape of resnet_v1_101_rfcn (resnet_v1_101_rfcn_dcn if ``dcn``), arg and aux,
    without the prefixes."""
    shapes: dict[str, tuple[int, ...]] = {"conv1_weight": (64, 3, 7, 7)}

    def bn(name, c):
        for p in ("gamma", "beta", "moving_mean", "moving_var"):
            shapes[f"{name}_{p}"] = (c,)

    bn("bn_conv1", 64)
    cin = 64
    for stage, units, mid in ((2, 3, 64), (3, 4, 128), (4, 23, 256), (5, 3, 512)):
        out = 4 * mid
        blocks = ["a", "b", "c"] if units == 3 else ["a"] + [f"b{i}" for i in range(1, units)]
        for block in blocks:
            if block == "a":
                shapes[f"res{stage}a_branch1_weight"] = (out, cin, 1, 1)
                bn(f"bn{stage}a_branch1", out)
            for br, shape in (("2a", (mid, cin, 1, 1)), ("2b", (mid, mid, 3, 3)), ("2c", (out, mid, 1, 1))):
                shapes[f"res{stage}{block}_branch{br}_weight"] = shape
                bn(f"bn{stage}{block}_branch{br}", shape[0])
            cin = out
    for name, shape in (("rpn_conv_3x3", (512, 1024, 3, 3)), ("rpn_cls_score", (2 * num_anchors, 512, 1, 1)),
                        ("rpn_bbox_pred", (4 * num_anchors, 512, 1, 1)), ("conv_new_1", (1024, 2048, 1, 1)),
                        ("rfcn_cls", (49 * num_classes, 1024, 1, 1)), ("rfcn_bbox", (49 * 4 * 2, 1024, 1, 1))):
        shapes[f"{name}_weight"], shapes[f"{name}_bias"] = shape, shape[:1]
    if dcn:
        offsets = [(f"res5{b}_branch2b_offset", (72, 512, 3, 3)) for b in "abc"]
        offsets += [("rfcn_cls_offset_t", (2 * 7 * 7 * num_classes, 1024, 1, 1)),
                    ("rfcn_bbox_offset_t", (7 * 7 * 2, 1024, 1, 1))]
        for name, shape in offsets:
            shapes[f"{name}_weight"], shapes[f"{name}_bias"] = shape, shape[:1]
    return shapes


def do_checkpoint(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The callback's extra arrays: weight * repeat(stds, 49) per output channel, bias * s + means (0)."""
    stds = list(STDS) * 2  # np.tile(BBOX_STDS, 2): 8 entries for bg + fg deltas
    repeat = params["rfcn_bbox_bias"].shape[0] // len(stds)  # 392 / 8 = 49
    s = torch.tensor([v for v in stds for _ in range(repeat)])  # mx.nd.repeat: each element `repeat` times
    return {**params, "rfcn_bbox_weight_test": params["rfcn_bbox_weight"] * s.view(-1, 1, 1, 1),
            "rfcn_bbox_bias_test": params["rfcn_bbox_bias"] * s + 0.0}


@pytest.fixture(scope="module")
def meta_shapes():
    model = zoo.create("rfcn-r101", device="meta")
    return model, {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def checkpoint():
    src = random_state_dict(reference_shapes(), 0, positive=("moving_var",), cheap_above=1_000_000)
    return src, do_checkpoint(src)


def test_names_and_shapes_load_strictly(meta_shapes, checkpoint):
    model, shapes = meta_shapes
    src, saved = checkpoint
    assert len(src) == len(shapes) == 532
    out = convert({(("aux:" if k.endswith(("moving_mean", "moving_var")) else "arg:") + k): v
                   for k, v in saved.items()})
    assert {k: tuple(v.shape) for k, v in out.items()} == shapes
    model.load_state_dict(out, strict=True, assign=True)
    assert out["backbone.body.conv1.weight"] is src["conv1_weight"]
    assert out["backbone.body.bn1.running_var"] is src["bn_conv1_moving_var"]
    assert out["backbone.body.layer3.22.conv3.weight"] is src["res4b22_branch2c_weight"]
    assert out["backbone.body.layer2.3.bn2.weight"] is src["bn3b3_branch2b_gamma"]
    assert out["backbone.body.layer4.2.bn1.bias"] is src["bn5c_branch2a_beta"]
    assert out["backbone.body.layer1.0.downsample.0.weight"] is src["res2a_branch1_weight"]
    assert out["backbone.body.layer4.0.downsample.1.running_mean"] is src["bn5a_branch1_moving_mean"]
    assert out["rpn.head.cls_logits.bias"] is src["rpn_cls_score_bias"]
    assert out["roi_heads.rfcn_cls.weight"] is src["rfcn_cls_weight"]
    # the plain (training) copy is passed through as it is
    plain = convert(src)
    assert plain["roi_heads.rfcn_bbox.weight"] is src["rfcn_bbox_weight"]


def test_bbox_std_scaling_is_undone(meta_shapes, checkpoint):
    model, _ = meta_shapes
    src, saved = checkpoint
    out = convert(saved)
    torch.testing.assert_close(out["roi_heads.rfcn_bbox.weight"], src["rfcn_bbox_weight"])
    torch.testing.assert_close(out["roi_heads.rfcn_bbox.bias"], src["rfcn_bbox_bias"])
    w, w_test = out["roi_heads.rfcn_bbox.weight"], saved["rfcn_bbox_weight_test"]
    for ch, std in ((0, 0.1), (48, 0.1), (49, 0.1), (2 * 49, 0.2), (3 * 49 + 48, 0.2), (4 * 49, 0.1),
                    (6 * 49 + 10, 0.2), (391, 0.2)):
        torch.testing.assert_close(w[ch] * std, w_test[ch])
    # the reference tester decodes the pooled fg deltas of the _test weights directly; zoo divides the
    # pooled deltas by its box coder weights: both give the same raw deltas
    x = torch.randn(1, 1024, 5, 6)
    rois = torch.tensor([[0.0, 3.0, 5.0, 80.0, 70.0], [0.0, 20.0, 0.0, 95.0, 40.0]])
    ref = ps_roi_vote(F.conv2d(x, w_test, saved["rfcn_bbox_bias_test"]), rois, 7, 1 / 16)[:, 4:8]
    ours = ps_roi_vote(F.conv2d(x, w, out["roi_heads.rfcn_bbox.bias"]), rois, 7, 1 / 16)[:, 4:8]
    weights = torch.tensor(model.roi_heads.box_coder.weights)
    assert weights.tolist() == [10.0, 10.0, 5.0, 5.0]
    torch.testing.assert_close(ours / weights, ref, rtol=1e-4, atol=1e-5)
    # a file whose plain keys were replaced by the scaled copies (load_param(process=True), re-saved)
    processed = {**src, "rfcn_bbox_weight": w_test, "rfcn_bbox_bias": saved["rfcn_bbox_bias_test"]}
    again = convert(processed, bbox_scaled=True)
    torch.testing.assert_close(again["roi_heads.rfcn_bbox.weight"], src["rfcn_bbox_weight"])


def test_rpn_scores_match_the_reference_softmax(checkpoint):
    src, _ = checkpoint
    out = convert(src)
    head = RFCNRPNHead(1024, 12, 512)
    head.load_state_dict({k[len("rpn.head."):]: v for k, v in out.items() if k.startswith("rpn.head.")})
    x = torch.randn(1, 1024, 3, 4)
    objectness, deltas = head([x])
    # the reference: Reshape(0, 2, -1, 0) -> softmax over the 2 channels -> Reshape(0, 2A, -1, 0)
    t = F.relu(F.conv2d(x, src["rpn_conv_3x3_weight"], src["rpn_conv_3x3_bias"], padding=1))
    score = F.conv2d(t, src["rpn_cls_score_weight"], src["rpn_cls_score_bias"])
    prob = torch.softmax(score.reshape(1, 2, -1, 4), dim=1).reshape(1, 24, 3, 4)
    torch.testing.assert_close(torch.sigmoid(objectness[0]), prob[:, 12:])
    torch.testing.assert_close(deltas[0], F.conv2d(t, src["rpn_bbox_pred_weight"], src["rpn_bbox_pred_bias"]))


def test_params_file_names_map(tmp_path):
    path = tmp_path / "rfcn_coco-0000.params"
    save_params(path, {"arg:res3b2_branch2b_weight": torch.ones(1, 1, 1, 1), "aux:bn4a_branch1_moving_var":
                       torch.ones(1), "arg:rfcn_bbox_weight_test": torch.ones(1, 1, 1, 1)})
    assert [convert_key(k) for k in load_params(path)] == [
        "backbone.body.layer2.2.conv2.weight", "backbone.body.layer3.0.downsample.1.running_var",
        "roi_heads.rfcn_bbox.weight"]
    for key in ("res4b1_branch1_weight", "res2a_branch2a_bias", "bn2a_branch2d_gamma", "res6a_branch2a_weight",
                "bn_conv1_weight", "fc1000_weight"):
        assert convert_key(key) is None, key


def test_dcn_names_and_shapes_load_strictly():
    """resnet_v1_101_rfcn_dcn -> rfcn(dcn=True, deform_psroi=True) (registry rfcn-dcn-r101), layout detected."""
    with torch.device("meta"):
        model = rfcn(dcn=True, deform_psroi=True)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    src = random_state_dict(reference_shapes(dcn=True), 1, positive=("moving_var",), cheap_above=1_000_000)
    saved = do_checkpoint(src)
    assert len(src) == len(shapes) == 542
    out = convert({(("aux:" if k.endswith(("moving_mean", "moving_var")) else "arg:") + k): v
                   for k, v in saved.items()})
    assert {k: tuple(v.shape) for k, v in out.items()} == shapes
    model.load_state_dict(out, strict=True, assign=True)
    for i, block in enumerate("abc"):
        assert out[f"backbone.body.layer4.{i}.conv2.conv_offset.weight"] is src[f"res5{block}_branch2b_offset_weight"]
        assert out[f"backbone.body.layer4.{i}.conv2.conv_offset.bias"] is src[f"res5{block}_branch2b_offset_bias"]
        assert out[f"backbone.body.layer4.{i}.conv2.weight"] is src[f"res5{block}_branch2b_weight"]
    assert out["roi_heads.rfcn_cls_pool.conv_offset.weight"] is src["rfcn_cls_offset_t_weight"]
    assert out["roi_heads.rfcn_bbox_pool.conv_offset.bias"] is src["rfcn_bbox_offset_t_bias"]
    torch.testing.assert_close(out["roi_heads.rfcn_bbox.weight"], src["rfcn_bbox_weight"])  # unscaled as before
    assert convert(src, dcn=True).keys() == out.keys()
    assert is_dcn_key("arg:rfcn_cls_offset_t_bias") and is_dcn_key("res5c_branch2b_offset_weight")
    assert not is_dcn_key("res5c_branch2b_weight") and not is_dcn_key("rfcn_cls_weight")
    with pytest.raises(StateDictMismatchError, match="rfcn_dcn state dict: 'rfcn_bbox_offset_t_weight'"):
        convert({k: v for k, v in src.items() if k != "rfcn_bbox_offset_t_weight"})
    plain = do_checkpoint(random_state_dict(reference_shapes(), 0, cheap_above=1))
    with pytest.raises(StateDictMismatchError, match="rfcn_dcn state dict: 'res5a_branch2b_offset_weight'"):
        convert(plain, dcn=True)


def test_errors(checkpoint):
    src, saved = checkpoint
    with pytest.raises(StateDictMismatchError, match="rfcn state dict: 1 unknown keys.*res5a_branch2b_offset_weight"):
        convert({**src, "res5a_branch2b_offset_weight": torch.zeros(72, 512, 3, 3)}, dcn=False)
    with pytest.raises(StateDictMismatchError, match="rfcn_dcn state dict: 'res5a_branch2b_offset_bias'"):
        convert({**src, "res5a_branch2b_offset_weight": torch.zeros(72, 512, 3, 3)})  # detected, incomplete
    missing = {k: v for k, v in saved.items() if k != "bn4b22_branch2c_moving_var"}
    with pytest.raises(StateDictMismatchError, match="'bn4b22_branch2c_moving_var' missing"):
        convert(missing)
    with pytest.raises(StateDictMismatchError, match="'rfcn_bbox_weight' missing"):
        convert({k: v for k, v in src.items() if k != "rfcn_bbox_weight"})
    with pytest.raises(StateDictMismatchError, match="only one of"):
        convert({k: v for k, v in saved.items() if k != "rfcn_bbox_bias_test"})
    with pytest.raises(StateDictMismatchError, match="bbox_scaled=False"):
        convert(saved, bbox_scaled=False)
    bad = {**saved, "rfcn_bbox_weight_test": torch.zeros(100, 1024, 1, 1), "rfcn_bbox_bias_test": torch.zeros(100)}
    with pytest.raises(StateDictMismatchError, match="100 output channels"):
        convert(bad)
