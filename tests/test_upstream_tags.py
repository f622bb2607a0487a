"""Every shipped upstream / manual weights tag: its fields validate, and its converter takes a state dict in
the upstream's own key layout (names and shapes written out in tests/converters/, independently of zoo's
models) to the entry's network strictly, with the tag's args."""
from __future__ import annotations

import re

import pytest
import torch

import zoo
from zoo.converters import get_converter, list_converters
from zoo.factory import build_model
from zoo.registry import default_registry
from zoo.weights import match_state_dict

from converters.test_adelaidet_condinst import adelaidet_shapes
from converters.test_couplenet_caffe import caffe_checkpoint
from converters.test_deformable_convnets_rfcn import do_checkpoint, reference_shapes
import converters.test_flownet_converters as flownet_layouts
from converters.test_flownet_converters import fnp_table, mmflow_table, ptlflow_checkpoint, ptlflow_table
from converters.test_fyu_drn import fyu_shapes
from converters.test_hdfnet_converter import original_state as hdfnet_state
from converters.test_kazuto_deeplab import kazuto_shapes
from converters.test_mmdet_condinst import mmdet_shapes as mmdet_condinst_shapes
from converters.test_mmdet_rcnn import mmdet_shapes as mmdet_rcnn_shapes
from converters.test_mmseg_dmnet import mmseg_shapes
from support.random_weights import random_state_dict

flownet_layouts.W = 1.0  # full-width tables (this module's copy; the converter tests keep theirs)
TAGS = sorted((info.name, w.tag) for info in default_registry() for w in info.weights.values() if w.upstream or w.manual)
CITED = re.compile(r"^[\w.-]+/[\w.-]+@[0-9a-f]{40}:\S+")


def meta(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(s, device="meta") for k, s in shapes.items()}


def _torchvision_deeplab(info, args):
    from torchvision.models.segmentation import deeplabv3_resnet50, deeplabv3_resnet101

    fn = deeplabv3_resnet101 if args["backbone"] == "resnet101" else deeplabv3_resnet50
    with torch.device("meta"):
        return fn(weights=None, weights_backbone=None, num_classes=args["num_classes"], aux_loss=True).state_dict()


def _timm(info, args):
    import timm

    name = {("b0", 4): "tf_efficientnet_cc_b0_4e", ("b0", 8): "tf_efficientnet_cc_b0_8e",
            ("b1", 8): "tf_efficientnet_cc_b1_8e"}[(args["variant"], args["num_experts"])]
    with torch.device("meta"):
        return timm.create_model(name, pretrained=False).state_dict()


def _drn(info, args):
    if args["variant"] == "a":
        from torchvision.models import resnet50

        with torch.device("meta"):
            return resnet50().state_dict()
    seg = args["num_classes"] if info.task == "semantic-segmentation" else None
    return meta(fyu_shapes(args["variant"], args["depth"], seg))


def _mmdet_rcnn(info, args):
    dcn = {"dcn": "DCN", "mdcn": "DCNv2"}.get(args.get("dcn"))
    roi = {"dpool": "DeformRoIPoolPack", "mdpool": "ModulatedDeformRoIPoolPack"}.get(args.get("roi_pool"))
    return meta(mmdet_rcnn_shapes(dcn, roi, info.task == "instance-segmentation"))


def _rfcn(info, args):
    shapes = reference_shapes(dcn=bool(args.get("dcn")))  # resnet_v1_101_rfcn or resnet_v1_101_rfcn_dcn
    return do_checkpoint(random_state_dict(shapes, 0, positive=("moving_var",), cheap_above=1_000_000))


def _fyu_dilation(info, args):
    with torch.device("meta"):
        ours = build_model(info, **args).state_dict()
    caffe = {}
    for key, value in ours.items():
        if key == "up.weight":
            continue
        module, leaf = key.rsplit(".", 1)
        module = {"final": "fc-final"}.get(module, module.replace("context.ctx_", "ct_"))
        caffe[f"{module}.{0 if leaf == 'weight' else 1}"] = value
    return caffe


LAYOUTS = {
    "torchvision-deeplabv3": _torchvision_deeplab,
    "timm-efficientnet-cc": _timm,
    "fyu-drn": _drn,
    "fyu-dilation": _fyu_dilation,
    "mmflow-flownet": lambda info, args: meta(mmflow_table(info.arch == "flownetc")),
    "flownet-pytorch": lambda info, args: meta(fnp_table(info.arch == "flownetc")),
    "flownet2": lambda info, args: meta(fnp_table(info.arch == "flownetc", biases=True, upsample_bias=info.arch == "flownetc")),
    "ptlflow-flownet": lambda info, args: ptlflow_checkpoint(meta(ptlflow_table(info.arch == "flownetc"))),
    "kazuto-deeplabv2": lambda info, args: meta(kazuto_shapes(args["num_classes"])),
    "mmseg-dmnet": lambda info, args: {"meta": {}, "state_dict": meta(mmseg_shapes(args["depth"], args["num_classes"]))},
    "mmdet-rcnn": lambda info, args: {"meta": {}, "state_dict": _mmdet_rcnn(info, args)},
    "adelaidet-condinst": lambda info, args: {"model": {**meta(adelaidet_shapes(args["depth"])),
                                                         "mask_head.sizes_of_interest": torch.tensor([64, 128, 256, 512, 1024])}},
    "mmdet-condinst": lambda info, args: {"meta": {}, "state_dict": meta(mmdet_condinst_shapes())},
    "deformable-convnets-rfcn": _rfcn,
    "couplenet-caffe": lambda info, args: caffe_checkpoint(0, args["num_classes"])[1],  # the snapshot's file
    "hdfnet": lambda info, args: hdfnet_state(args["backbone"]),
}


def test_every_converter_used_by_a_tag_has_a_layout_here():
    used = {zoo.model_info(n).weights[t].converter for n, t in TAGS}
    assert used <= set(LAYOUTS), sorted(used - set(LAYOUTS))
    assert set(LAYOUTS) <= set(list_converters())


@pytest.mark.parametrize("name,tag", TAGS, ids=[f"{n}.{t}" for n, t in TAGS])
def test_tag_validates_and_its_converter_loads_the_upstream_layout_strictly(name, tag):
    info = zoo.model_info(name)
    w = info.weights[tag]
    spec = w.upstream or w.manual
    assert w.license and w.source
    assert spec.cited_from and CITED.match(spec.cited_from), spec.cited_from
    if w.upstream is not None:
        assert w.upstream.url.startswith(("https://", "http://"))
        prefix = re.search(r"-([0-9a-f]{8,})\.\w+$", w.upstream.file_name)
        if prefix:  # a file name that carries its hash prefix must be checked against it
            assert w.upstream.sha256 is not None and w.upstream.sha256.startswith(prefix[1][: len(w.upstream.sha256)])
    for m in w.metrics:
        assert m.reported or m.measured
    args = info.args_for(tag)
    converted = get_converter(spec.converter)(LAYOUTS[spec.converter](info, args))
    with torch.device("meta"):
        model = build_model(info, **args)
    match_state_dict(model, converted, strict=True, what=f"{name}.{tag}")


def test_ptlflow_tags_preprocess_as_ptlflow():
    """ptlflow's FlowNet takes BGR in [0, 1], subtracts each frame's per-channel spatial mean and flips to RGB
    (hmorimitsu/ptlflow@e9cf9bcedd06cba2abe94d6bddfb2ed4f91ac3a2 ptlflow/models/flownet/flownets.py L91-101,
    base_model/base_model.py L207-216); zoo feeds RGB, so the tags' preset is per-frame means, no flip."""
    from zoo.transforms import build_transforms

    rgb = torch.tensor([[[[0.0, 0.2], [0.4, 0.6]], [[0.5, 0.5], [0.5, 0.5]], [[1.0, 0.0], [0.0, 0.0]]],
                        [[[0.1, 0.1], [0.1, 0.1]], [[0.0, 1.0], [1.0, 0.0]], [[0.2, 0.4], [0.6, 0.8]]]])[None]
    # by hand: frame 1 means (R, G, B) = (0.3, 0.5, 0.25), frame 2 means = (0.1, 0.5, 0.5)
    expected = torch.tensor([[[-0.3, -0.1], [0.1, 0.3]], [[0.0, 0.0], [0.0, 0.0]], [[0.75, -0.25], [-0.25, -0.25]],
                             [[0.0, 0.0], [0.0, 0.0]], [[-0.5, 0.5], [0.5, -0.5]], [[-0.3, -0.1], [0.1, 0.3]]])[None]
    bgr = rgb.flip(2)
    ptlflow = (bgr - bgr.mean(dim=(3, 4), keepdim=True)).flip(2).reshape(1, 6, 2, 2)  # flownets.py forward
    torch.testing.assert_close(ptlflow, expected)
    for name in ("flownets", "flownetc"):
        info = zoo.model_info(name)
        x = build_transforms(info.transforms_for("ptlflow-things"))(rgb)
        assert x.shape == (1, 6, 64, 64)  # padded (replicate) to multiples of 64: ptlflow resizes instead
        torch.testing.assert_close(x[..., :2, :2], expected)
        torch.testing.assert_close(x[..., 63, 63], expected[..., 1, 1])
        # the entry's default (flownet2-pytorch's mean over both frames) is not ptlflow's
        assert not torch.allclose(build_transforms(info.transforms)(rgb)[..., :2, :2], expected)
