"""The mmdetection layout is written out here from mmdet's configs (configs/dcn, configs/dcnv2:
ResNet-50 style='pytorch' with dcn=dict(type='DCN' | 'DCNv2', deform_groups=1) in stage_with_dcn=(False,
True, True, True), FPN(in [256, 512, 1024, 2048], out 256, num_outs 5), RPNHead(256, 3 anchors),
SingleRoIExtractor(RoIAlign | DeformRoIPoolPack | ModulatedDeformRoIPoolPack, output 7, output_channels
256, strides 4..32), Shared2FCBBoxHead(fc 1024, 80 classes), FCNMaskHead(4 convs, 80 classes)),
independently of zoo's model. Checkpoint files are {"meta": ..., "state_dict": ...}."""
import pytest
import torch

from zoo.converters.mmdet_rcnn import COCO_IDS, convert, convert_key
from zoo.errors import StateDictMismatchError
from zoo.models.rcnn import faster_rcnn, mask_rcnn
from support.layouts import resnet_block_shapes
from support.random_weights import random_state_dict as _random_state_dict

BLOCKS = (3, 4, 6, 3)
VARIANTS = {  # mmdet config -> (zoo constructor, args, mmdet dcn type, roi layer type, mask head)
    "faster_rcnn_r50_fpn_dconv_c3-c5_1x_coco": (faster_rcnn, {"dcn": "dcn"}, "DCN", None, False),
    "faster_rcnn_r50_fpn_mdconv_c3-c5_1x_coco": (faster_rcnn, {"dcn": "mdcn"}, "DCNv2", None, False),
    "faster_rcnn_r50_fpn_dpool_1x_coco": (faster_rcnn, {"roi_pool": "dpool"}, None, "DeformRoIPoolPack", False),
    "faster_rcnn_r50_fpn_mdpool_1x_coco": (faster_rcnn, {"roi_pool": "mdpool"}, None, "ModulatedDeformRoIPoolPack", False),
    "mask_rcnn_r50_fpn_dconv_c3-c5_1x_coco": (mask_rcnn, {"dcn": "dcn"}, "DCN", None, True),
    "mask_rcnn_r50_fpn_mdconv_c3-c5_1x_coco": (mask_rcnn, {"dcn": "mdcn"}, "DCNv2", None, True),
}


def mmdet_shapes(dcn=None, roi_layer=None, mask=False, num_classes=80) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(p, c):
        for t in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{p}.{t}"] = (c,)
        shapes[f"{p}.num_batches_tracked"] = ()

    def conv(p, cout, cin, k, bias=True):
        shapes[f"{p}.weight"] = (cout, cin, k, k)
        if bias:
            shapes[f"{p}.bias"] = (cout,)

    conv("backbone.conv1", 64, 3, 7, bias=False)
    bn("backbone.bn1", 64)
    inplanes = 64
    for layer, (n, planes) in enumerate(zip(BLOCKS, (64, 128, 256, 512)), start=1):
        # conv2 offsets of DeformConv2dPack (18) / ModulatedDeformConv2dPack (27) in stages 2..4
        offset = (18 if dcn == "DCN" else 27) if dcn is not None and layer > 1 else 0
        for b in range(n):
            inplanes = resnet_block_shapes(shapes, f"backbone.layer{layer}.{b}", "bottleneck", inplanes, planes,
                                           downsample=b == 0, bn=bn, conv2_offset=offset)
    for i, cin in enumerate((256, 512, 1024, 2048)):
        conv(f"neck.lateral_convs.{i}.conv", 256, cin, 1)
        conv(f"neck.fpn_convs.{i}.conv", 256, 256, 3)
    conv("rpn_head.rpn_conv", 256, 256, 3)
    conv("rpn_head.rpn_cls", 3, 256, 1)
    conv("rpn_head.rpn_reg", 12, 256, 1)
    if roi_layer is not None:
        for i in range(4):
            p = f"roi_head.bbox_roi_extractor.roi_layers.{i}"
            for j, (o, n) in enumerate(((1024, 49 * 256), (1024, 1024), (98, 1024))):
                shapes[f"{p}.offset_fc.{2 * j}.weight"], shapes[f"{p}.offset_fc.{2 * j}.bias"] = (o, n), (o,)
            if roi_layer == "ModulatedDeformRoIPoolPack":
                for j, (o, n) in enumerate(((1024, 49 * 256), (49, 1024))):
                    shapes[f"{p}.mask_fc.{2 * j}.weight"], shapes[f"{p}.mask_fc.{2 * j}.bias"] = (o, n), (o,)
    for name, (o, n) in (("shared_fcs.0", (1024, 256 * 49)), ("shared_fcs.1", (1024, 1024)),
                         ("fc_cls", (num_classes + 1, 1024)), ("fc_reg", (4 * num_classes, 1024))):
        shapes[f"roi_head.bbox_head.{name}.weight"], shapes[f"roi_head.bbox_head.{name}.bias"] = (o, n), (o,)
    if mask:
        for i in range(4):
            conv(f"roi_head.mask_head.convs.{i}.conv", 256, 256, 3)
        shapes["roi_head.mask_head.upsample.weight"] = (256, 256, 2, 2)  # ConvTranspose2d (in, out, k, k)
        shapes["roi_head.mask_head.upsample.bias"] = (256,)
        conv("roi_head.mask_head.conv_logits", num_classes, 256, 1)
    return shapes


def random_state_dict(shapes, seed: int = 0) -> dict[str, torch.Tensor]:
    return _random_state_dict(shapes, seed, cheap_above=1_000_000)


@pytest.mark.parametrize("config", sorted(VARIANTS))
def test_checkpoint_loads_strictly(config):
    fn, args, dcn, roi_layer, mask = VARIANTS[config]
    src = random_state_dict(mmdet_shapes(dcn, roi_layer, mask))
    out = convert({"meta": {"mmdet_version": "2.28.2"}, "state_dict": src})
    with torch.device("meta"):
        model = fn(**args)
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(out, strict=True, assign=True)
    assert out["backbone.body.layer1.0.conv1.weight"] is src["backbone.layer1.0.conv1.weight"]
    assert out["backbone.fpn.inner_blocks.3.0.weight"] is src["neck.lateral_convs.3.conv.weight"]
    assert out["rpn.head.bbox_pred.weight"] is src["rpn_head.rpn_reg.weight"]
    if dcn:
        assert out["backbone.body.layer3.5.conv2.conv_offset.weight"] is src["backbone.layer3.5.conv2.conv_offset.weight"]
    if roi_layer:
        assert (out["roi_heads.box_roi_pool.roi_layers.2.offset_fc.4.bias"]
                is src["roi_head.bbox_roi_extractor.roi_layers.2.offset_fc.4.bias"])


def test_classifier_rows_follow_coco_ids_and_keep_mmdet_probabilities():
    assert len(COCO_IDS) == 80 and len(set(COCO_IDS)) == 80 and COCO_IDS[0] == 1 and COCO_IDS[-1] == 90
    src = random_state_dict(mmdet_shapes("DCN", None, True), seed=1)
    out = convert({f"module.{k}": v for k, v in src.items()})
    x = torch.randn(5, 1024)
    # mmdet: softmax over 80 classes + background (last); class-specific deltas for the 80 classes
    mm_prob = torch.softmax(x @ src["roi_head.bbox_head.fc_cls.weight"].T + src["roi_head.bbox_head.fc_cls.bias"], -1)
    mm_reg = (x @ src["roi_head.bbox_head.fc_reg.weight"].T + src["roi_head.bbox_head.fc_reg.bias"]).view(5, 80, 4)
    prob = torch.softmax(x @ out["roi_heads.box_predictor.cls_score.weight"].T
                         + out["roi_heads.box_predictor.cls_score.bias"], -1)
    reg = (x @ out["roi_heads.box_predictor.bbox_pred.weight"].T + out["roi_heads.box_predictor.bbox_pred.bias"]).view(5, 91, 4)
    ids = list(COCO_IDS)
    torch.testing.assert_close(prob[:, ids], mm_prob[:, :80])
    torch.testing.assert_close(prob[:, 0], mm_prob[:, 80])
    unused = sorted(set(range(1, 91)) - set(ids))
    assert len(unused) == 10 and prob[:, unused].max() == 0
    torch.testing.assert_close(reg[:, ids], mm_reg)
    assert reg[:, [0] + unused].abs().max() == 0
    logits = out["roi_heads.mask_predictor.mask_fcn_logits.weight"]
    assert logits.shape == (91, 256, 1, 1)
    torch.testing.assert_close(logits[ids], src["roi_head.mask_head.conv_logits.weight"])
    assert logits[[0] + unused].abs().max() == 0
    assert not any(k.endswith("num_batches_tracked") for k in out)


def test_convert_key():
    assert convert_key("backbone.layer4.2.conv2.conv_offset.bias") == "backbone.body.layer4.2.conv2.conv_offset.bias"
    assert convert_key("neck.fpn_convs.1.conv.bias") == "backbone.fpn.layer_blocks.1.0.bias"
    assert convert_key("rpn_head.rpn_conv.weight") == "rpn.head.conv.0.0.weight"
    assert convert_key("roi_head.mask_head.upsample.weight") == "roi_heads.mask_predictor.conv5_mask.weight"
    assert (convert_key("roi_head.bbox_roi_extractor.roi_layers.0.mask_fc.2.weight")
            == "roi_heads.box_roi_pool.roi_layers.0.mask_fc.2.weight")
    assert convert_key("roi_head.bbox_head.fc_cls.weight") == "roi_heads.box_predictor.cls_score.weight"
    assert convert_key("bbox_head.fc_cls.weight") is None  # mmdet 1.x layout


def test_errors():
    src = random_state_dict(mmdet_shapes("DCN"))
    with pytest.raises(StateDictMismatchError, match="unknown keys"):
        convert({**src, "roi_head.bbox_head.shared_convs.0.weight": torch.zeros(1)})
    with pytest.raises(StateDictMismatchError, match="missing"):
        convert({k: v for k, v in src.items() if not k.startswith("roi_head.bbox_head.fc_cls")})
    voc = random_state_dict(mmdet_shapes("DCN", num_classes=20))
    with pytest.raises(StateDictMismatchError, match="rows"):
        convert(voc)
