"""The mmdetection 3.x layout is written out here from ``configs/condinst/condinst_r50_fpn_ms-poly-90k_coco_instance``
and its modules (ResNet-50 style='pytorch' with BN; FPN(start_level=1, add_extra_convs='on_output',
num_outs=5): ``lateral_convs.{0..2}.conv``, ``fpn_convs.{0..4}.conv``; ``CondInstBboxHead`` (FCOSHead,
conv_bias=True, GN): ``{cls,reg}_convs.i.{conv,gn}``, ``conv_cls``, ``conv_reg``, ``conv_centerness``,
``controller``, ``scales.i.scale`` of shape (); ``CondInstMaskHead.mask_feature_head`` (MaskFeatModule):
``convs_all_levels.i.conv{i}.{conv,bn}``, ``conv_branch.j.{conv,bn}``, ``conv_pred``), independently of
zoo's model. The converted head and mask branch are checked against a functional re-implementation of
mmdet's forward on the ORIGINAL keys."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zoo.converters.mmdet_condinst import SIZES_OF_INTEREST, convert, convert_key
from zoo.errors import StateDictMismatchError
from zoo.models.condinst import FCOSHead, MaskBranch, condinst
from zoo.ops.dynamic_mask_head import aligned_bilinear
from support.random_weights import random_state_dict as _random_state_dict

MF = "mask_head.mask_feature_head"


def mmdet_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(p, cout, cin, k, bias=True):
        shapes[f"{p}.weight"] = (cout, cin, k, k)
        if bias:
            shapes[f"{p}.bias"] = (cout,)

    def bn(p, c):
        for t in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{p}.{t}"] = (c,)
        shapes[f"{p}.num_batches_tracked"] = ()

    conv("backbone.conv1", 64, 3, 7, bias=False)
    bn("backbone.bn1", 64)
    inplanes = 64
    for layer, (n, planes) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
        for b in range(n):
            p = f"backbone.layer{layer}.{b}"
            for j, (o, c, k) in enumerate(((planes, inplanes, 1), (planes, planes, 3), (planes * 4, planes, 1)), 1):
                conv(f"{p}.conv{j}", o, c, k, bias=False)
                bn(f"{p}.bn{j}", o)
            if b == 0:
                conv(f"{p}.downsample.0", planes * 4, inplanes, 1, bias=False)
                bn(f"{p}.downsample.1", planes * 4)
            inplanes = planes * 4
    for i, c in enumerate((512, 1024, 2048)):
        conv(f"neck.lateral_convs.{i}.conv", 256, c, 1)
    for i in range(5):
        conv(f"neck.fpn_convs.{i}.conv", 256, 256, 3)
    for tower in ("cls_convs", "reg_convs"):
        for i in range(4):
            conv(f"bbox_head.{tower}.{i}.conv", 256, 256, 3)
            shapes[f"bbox_head.{tower}.{i}.gn.weight"] = shapes[f"bbox_head.{tower}.{i}.gn.bias"] = (256,)
    conv("bbox_head.conv_cls", 80, 256, 3)
    conv("bbox_head.conv_reg", 4, 256, 3)
    conv("bbox_head.conv_centerness", 1, 256, 3)
    conv("bbox_head.controller", 169, 256, 3)
    for i in range(5):
        shapes[f"bbox_head.scales.{i}.scale"] = ()
    for i in range(3):
        conv(f"{MF}.convs_all_levels.{i}.conv{i}.conv", 128, 256, 3, bias=False)
        bn(f"{MF}.convs_all_levels.{i}.conv{i}.bn", 128)
    for j in range(4):
        conv(f"{MF}.conv_branch.{j}.conv", 128, 128, 3, bias=False)
        bn(f"{MF}.conv_branch.{j}.bn", 128)
    conv(f"{MF}.conv_pred", 8, 128, 1)
    return shapes


def random_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    return _random_state_dict(mmdet_shapes(), seed, scale=0.05, batches=90000, positive=(".scale",))


def test_checkpoint_loads_strictly():
    src = random_state_dict()
    out = convert({"meta": {"mmdet_version": "3.0.0"}, "state_dict": src})
    with torch.device("meta"):
        model = condinst(style="pytorch", thresh_with_ctr=False)
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(out, strict=True, assign=True)
    assert out["backbone.body.layer1.0.conv1.weight"] is src["backbone.layer1.0.conv1.weight"]
    assert out["backbone.fpn.extra_blocks.p6.weight"] is src["neck.fpn_convs.3.conv.weight"]
    assert out["head.bbox_tower.7.weight"] is src["bbox_head.reg_convs.2.gn.weight"]
    assert out["mask_branch.tower.4.weight"] is src[f"{MF}.conv_pred.weight"]
    assert out["head.scales.3.scale"].shape == (1,) and out["head.scales.3.scale"] == src["bbox_head.scales.3.scale"]
    assert out["mask_head.sizes_of_interest"].tolist() == list(SIZES_OF_INTEREST) == [8 * s for s in (8, 16, 32, 64, 128)]
    assert not any(k.startswith("backbone.") and k.endswith("num_batches_tracked") for k in out)


def _conv(sd, p, x):
    w = sd[f"{p}.weight"]
    return F.conv2d(x, w, sd.get(f"{p}.bias"), padding=w.shape[-1] // 2)


def _bn_relu(sd, p, x):
    return F.relu(F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"]))


def mmdet_forward(sd, feats):
    """mmdet CondInstBboxHead.forward_single (before the test-time x stride) and MaskFeatModule.forward."""
    logits, reg, ctr, params = [], [], [], []
    for level, x in enumerate(feats):
        t = {}
        for name in ("cls_convs", "reg_convs"):
            y = x
            for i in range(4):  # ConvModule: conv -> gn -> relu
                p = f"bbox_head.{name}.{i}"
                y = F.relu(F.group_norm(_conv(sd, f"{p}.conv", y), 32, sd[f"{p}.gn.weight"], sd[f"{p}.gn.bias"]))
            t[name] = y
        logits.append(_conv(sd, "bbox_head.conv_cls", t["cls_convs"]))
        reg.append((sd[f"bbox_head.scales.{level}.scale"] * _conv(sd, "bbox_head.conv_reg", t["reg_convs"])).clamp(min=0))
        ctr.append(_conv(sd, "bbox_head.conv_centerness", t["reg_convs"]))
        params.append(_conv(sd, "bbox_head.controller", t["reg_convs"]))
    mask = None
    for i, f in enumerate(feats[:3]):
        p = f"{MF}.convs_all_levels.{i}.conv{i}"
        y = _bn_relu(sd, f"{p}.bn", _conv(sd, f"{p}.conv", f))
        mask = y if mask is None else mask + aligned_bilinear(y, mask.shape[-2] // y.shape[-2])
    for j in range(4):
        mask = _bn_relu(sd, f"{MF}.conv_branch.{j}.bn", _conv(sd, f"{MF}.conv_branch.{j}.conv", mask))
    return logits, reg, ctr, params, [_conv(sd, f"{MF}.conv_pred", mask)]


def test_converted_head_and_mask_branch_compute_mmdet():
    src = random_state_dict(seed=2)  # random Scale values 0.5..1.5
    zoo_state, feats = convert(src), [torch.randn(1, 256, 8 // s, 12 // s) for s in (1, 2, 4, 8)]
    feats.append(torch.randn(1, 256, 1, 1))
    head = FCOSHead().eval()
    head.load_state_dict({k.removeprefix("head."): v for k, v in zoo_state.items() if k.startswith("head.")})
    branch = MaskBranch().eval()
    branch.load_state_dict({k[12:]: v for k, v in zoo_state.items() if k.startswith("mask_branch.")})
    with torch.no_grad():
        outputs = [*head(feats), [branch(feats[:3])]]
        for ours, theirs in zip(outputs, mmdet_forward(src, feats)):
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_convert_key():
    assert convert_key("bbox_head.cls_convs.3.gn.bias") == "head.cls_tower.10.bias"
    assert convert_key("bbox_head.reg_convs.0.conv.weight") == "head.bbox_tower.0.weight"
    assert convert_key("neck.fpn_convs.4.conv.bias") == "backbone.fpn.extra_blocks.p7.bias"
    assert convert_key("neck.lateral_convs.0.conv.weight") == "backbone.fpn.inner_blocks.0.0.weight"
    assert convert_key(f"module.{MF}.convs_all_levels.1.conv1.bn.running_var") == "mask_branch.refine.1.1.running_var"
    assert convert_key(f"{MF}.conv_pred.bias", num_branch_convs=2) == "mask_branch.tower.2.bias"
    assert convert_key("neck.lateral_convs.3.conv.weight") is None  # start_level=1: only C3-C5
    assert convert_key("rpn_head.rpn_cls.weight") is None


def test_errors():
    src = random_state_dict()
    with pytest.raises(StateDictMismatchError, match="unknown keys"):
        convert({**src, "roi_head.bbox_head.fc_cls.weight": torch.zeros(1)})
    with pytest.raises(StateDictMismatchError, match="conv_pred"):
        convert({k: v for k, v in src.items() if not k.startswith(f"{MF}.conv_pred")})
    with pytest.raises(StateDictMismatchError, match="one number"):
        convert({**src, "bbox_head.scales.0.scale": torch.ones(2)})
