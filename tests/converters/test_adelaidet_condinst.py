"""The AdelaiDet layout is written out here from its module structure (detectron2 ResNet with
STRIDE_IN_1X1 and FrozenBN: ``stem.conv1(.norm)``, ``resN.i.conv{1,2,3}(.norm)``, ``shortcut(.norm)``;
``build_fcos_resnet_fpn_backbone``: ``fpn_lateral{3,4,5}``, ``fpn_output{3,4,5}``, ``top_block.p6/p7``;
``FCOSHead``: ``{cls,bbox}_tower`` Sequential(conv, GN, ReLU) x 4, ``cls_logits``, ``bbox_pred``,
``ctrness``, ``scales.i.scale`` (1,); ``CondInst.controller``; ``MaskBranch``: ``refine.i`` and ``tower.j``
Sequential(conv, BN, ReLU), ``tower.4`` 1x1; ``DynamicMaskHead`` buffers ``sizes_of_interest``, ``_iter``),
independently of zoo's model. The converted head and mask branch are checked against a functional
re-implementation of AdelaiDet's forward on the ORIGINAL keys."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zoo.converters.adelaidet_condinst import convert, convert_key
from zoo.errors import StateDictMismatchError
from zoo.models.condinst import FCOSHead, MaskBranch, condinst
from zoo.ops.dynamic_mask_head import aligned_bilinear
from support.random_weights import random_state_dict as _random_state_dict

BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
FH = "proposal_generator.fcos_head"


def adelaidet_shapes(depth: int = 50, sem: bool = False) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(p, cout, cin, k, bias=True):
        shapes[f"{p}.weight"] = (cout, cin, k, k)
        if bias:
            shapes[f"{p}.bias"] = (cout,)

    def norm(p, c, bn=False):  # FrozenBN (no counter) or torch BatchNorm2d
        for t in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{p}.{t}"] = (c,)
        if bn:
            shapes[f"{p}.num_batches_tracked"] = ()

    bu = "backbone.bottom_up"
    conv(f"{bu}.stem.conv1", 64, 3, 7, bias=False)
    norm(f"{bu}.stem.conv1.norm", 64)
    cin = 64
    for stage, (n, bott) in enumerate(zip(BLOCKS[depth], (64, 128, 256, 512)), start=2):
        for i in range(n):
            p = f"{bu}.res{stage}.{i}"
            if i == 0:
                conv(f"{p}.shortcut", bott * 4, cin, 1, bias=False)
                norm(f"{p}.shortcut.norm", bott * 4)
            for j, (o, c, k) in enumerate(((bott, cin, 1), (bott, bott, 3), (bott * 4, bott, 1)), start=1):
                conv(f"{p}.conv{j}", o, c, k, bias=False)
                norm(f"{p}.conv{j}.norm", o)
            cin = bott * 4
    for level, c in zip((3, 4, 5), (512, 1024, 2048)):
        conv(f"backbone.fpn_lateral{level}", 256, c, 1)
        conv(f"backbone.fpn_output{level}", 256, 256, 3)
    conv("backbone.top_block.p6", 256, 256, 3)
    conv("backbone.top_block.p7", 256, 256, 3)
    for tower in ("cls_tower", "bbox_tower"):
        for i in range(4):
            conv(f"{FH}.{tower}.{3 * i}", 256, 256, 3)
            shapes[f"{FH}.{tower}.{3 * i + 1}.weight"] = shapes[f"{FH}.{tower}.{3 * i + 1}.bias"] = (256,)
    conv(f"{FH}.cls_logits", 80, 256, 3)
    conv(f"{FH}.bbox_pred", 4, 256, 3)
    conv(f"{FH}.ctrness", 1, 256, 3)
    for i in range(5):
        shapes[f"{FH}.scales.{i}.scale"] = (1,)
    conv("controller", 169, 256, 3)
    for i in range(3):
        conv(f"mask_branch.refine.{i}.0", 128, 256, 3, bias=False)
        norm(f"mask_branch.refine.{i}.1", 128, bn=True)
    for i in range(4):
        conv(f"mask_branch.tower.{i}.0", 128, 128, 3, bias=False)
        norm(f"mask_branch.tower.{i}.1", 128, bn=True)
    conv("mask_branch.tower.4", 8, 128, 1)
    if sem:  # CondInst_MS_R_*_sem: auxiliary semantic segmentation head (training only)
        for i, c in enumerate((256, 128)):
            conv(f"mask_branch.seg_head.{i}.0", 128, c, 3, bias=False)
            norm(f"mask_branch.seg_head.{i}.1", 128, bn=True)
        conv("mask_branch.logits", 80, 128, 1)
    return shapes


def random_state_dict(shapes, seed: int = 0) -> dict[str, torch.Tensor]:
    out = _random_state_dict(shapes, seed, scale=0.05, batches=90000)
    out["mask_head.sizes_of_interest"] = torch.tensor([64, 128, 256, 512, 1024])
    out["mask_head._iter"] = torch.tensor([90000.0])
    return out


@pytest.mark.parametrize("depth,sem", [(50, False), (50, True), (101, False)])
def test_checkpoint_loads_strictly(depth, sem):
    src = random_state_dict(adelaidet_shapes(depth, sem))
    out = convert({"model": src, "iteration": 89999})
    with torch.device("meta"):
        model = condinst(depth=depth)
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(out, strict=True, assign=True)
    assert out["backbone.body.layer3.5.bn2.running_var"] is src["backbone.bottom_up.res4.5.conv2.norm.running_var"]
    assert out["backbone.body.layer4.0.downsample.0.weight"] is src["backbone.bottom_up.res5.0.shortcut.weight"]
    assert out["backbone.fpn.inner_blocks.2.0.weight"] is src["backbone.fpn_lateral5.weight"]
    assert out["backbone.fpn.extra_blocks.p7.bias"] is src["backbone.top_block.p7.bias"]
    assert out["head.controller.weight"] is src["controller.weight"]
    assert out["mask_branch.tower.4.bias"] is src["mask_branch.tower.4.bias"]
    torch.testing.assert_close(out["backbone.body.conv1.weight"], src["backbone.bottom_up.stem.conv1.weight"][:, [2, 1, 0]])


def test_stem_takes_rgb_as_detectron2_takes_bgr():
    """detectron2: conv1(BGR * 255 - PIXEL_MEAN) with the original weight; zoo: conv1(normalise(RGB)) with
    the converted weight (style "caffe")."""
    src = random_state_dict(adelaidet_shapes())
    out = convert(src)
    with torch.device("meta"):
        model = condinst(style="caffe")
    rgb = torch.rand(3, 32, 40)
    bgr = rgb.flip(0) * 255 - torch.tensor([103.530, 116.280, 123.675]).view(3, 1, 1)
    expected = F.conv2d(bgr[None], src["backbone.bottom_up.stem.conv1.weight"], stride=2, padding=3)
    got = F.conv2d(model.transform.normalize(rgb)[None], out["backbone.body.conv1.weight"], stride=2, padding=3)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-3)


def _conv(sd, p, x):
    w = sd[f"{p}.weight"]
    return F.conv2d(x, w, sd.get(f"{p}.bias"), padding=w.shape[-1] // 2)


def _bn(sd, p, x):
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"])


def adelaidet_forward(sd, feats):
    """AdelaiDet FCOSHead.forward(top_module=controller) and MaskBranch.forward on the original keys."""
    logits, reg, ctr, top = [], [], [], []
    for level, x in enumerate(feats):
        towers = {}
        for name in ("cls_tower", "bbox_tower"):
            t = x
            for i in (0, 3, 6, 9):
                t = _conv(sd, f"{FH}.{name}.{i}", t)
                t = F.relu(F.group_norm(t, 32, sd[f"{FH}.{name}.{i + 1}.weight"], sd[f"{FH}.{name}.{i + 1}.bias"]))
            towers[name] = t
        logits.append(_conv(sd, f"{FH}.cls_logits", towers["cls_tower"]))
        ctr.append(_conv(sd, f"{FH}.ctrness", towers["bbox_tower"]))
        reg.append(F.relu(_conv(sd, f"{FH}.bbox_pred", towers["bbox_tower"]) * sd[f"{FH}.scales.{level}.scale"]))
        top.append(_conv(sd, "controller", towers["bbox_tower"]))
    mask = None
    for i, f in enumerate(feats[:3]):
        y = F.relu(_bn(sd, f"mask_branch.refine.{i}.1", _conv(sd, f"mask_branch.refine.{i}.0", f)))
        mask = y if mask is None else mask + aligned_bilinear(y, 2 ** i)
    for j in range(4):
        mask = F.relu(_bn(sd, f"mask_branch.tower.{j}.1", _conv(sd, f"mask_branch.tower.{j}.0", mask)))
    return logits, reg, ctr, top, [_conv(sd, "mask_branch.tower.4", mask)]


def test_converted_head_and_mask_branch_compute_adelaidet():
    src = random_state_dict(adelaidet_shapes(), seed=3)
    src.update({f"{FH}.scales.{i}.scale": torch.tensor([0.5 + 0.25 * i]) for i in range(5)})
    out = convert(src)
    head, branch = FCOSHead().eval(), MaskBranch().eval()
    for module, prefix in ((head, "head."), (branch, "mask_branch.")):
        module.load_state_dict({k[len(prefix):]: v for k, v in out.items() if k.startswith(prefix)}, strict=True)
    feats = [torch.randn(1, 256, h, w) for h, w in ((8, 12), (4, 6), (2, 3), (1, 2), (1, 1))]
    with torch.no_grad():
        for got, expected in zip((*head(feats), [branch(feats[:3])]), adelaidet_forward(src, feats)):
            for a, b in zip(got, expected):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_convert_key():
    assert convert_key("backbone.bottom_up.res2.0.shortcut.norm.running_mean") == "backbone.body.layer1.0.downsample.1.running_mean"
    assert convert_key("module.backbone.bottom_up.res5.2.conv3.weight") == "backbone.body.layer4.2.conv3.weight"
    assert convert_key("backbone.fpn_output3.bias") == "backbone.fpn.layer_blocks.0.0.bias"
    assert convert_key(f"{FH}.bbox_tower.10.weight") == "head.bbox_tower.10.weight"
    assert convert_key(f"{FH}.scales.4.scale") == "head.scales.4.scale"
    assert convert_key("mask_branch.refine.2.1.num_batches_tracked") == "mask_branch.refine.2.1.num_batches_tracked"
    assert convert_key("backbone.bottom_up.res6.0.conv1.weight") is None
    assert convert_key("roi_heads.box_predictor.cls_score.weight") is None


def test_errors():
    src = random_state_dict(adelaidet_shapes())
    with pytest.raises(StateDictMismatchError, match="unknown keys"):
        convert({**src, "roi_heads.mask_head.mask_fcn1.weight": torch.zeros(1)})
    with pytest.raises(StateDictMismatchError, match="controller.weight"):
        convert({k: v for k, v in src.items() if not k.startswith("controller.")})
