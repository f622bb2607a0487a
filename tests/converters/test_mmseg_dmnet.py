"""The mmsegmentation DMNet layout is written out here from mmseg's architecture (ResNetV1c with
deep_stem, ResLayer / Bottleneck with bn1..bn3, DMHead with DCM modules, FCNHead), independently of
zoo's model. Checkpoint files are {"meta": ..., "state_dict": ...}."""
import pytest
import torch
import torch.nn.functional as F

from zoo.converters.mmseg_dmnet import convert, convert_key
from zoo.errors import StateDictMismatchError
from zoo.models.dmnet import dmnet
from support.layouts import resnet_block_shapes
from support.random_weights import random_state_dict as _random_state_dict

BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def mmseg_shapes(depth: int = 50, num_classes: int = 150, aux: bool = True) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(p, c):
        for t in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{p}.{t}"] = (c,)
        shapes[f"{p}.num_batches_tracked"] = ()

    for i, (cin, cout) in zip((0, 3, 6), ((3, 32), (32, 32), (32, 64))):
        shapes[f"backbone.stem.{i}.weight"] = (cout, cin, 3, 3)
        bn(f"backbone.stem.{i + 1}", cout)
    inplanes = 64
    for layer, (n, planes) in enumerate(zip(BLOCKS[depth], (64, 128, 256, 512)), start=1):
        for b in range(n):
            inplanes = resnet_block_shapes(shapes, f"backbone.layer{layer}.{b}", "bottleneck", inplanes, planes,
                                           downsample=b == 0, bn=bn)
    for j in range(4):
        p = f"decode_head.dcm_modules.{j}"
        shapes[f"{p}.filter_gen_conv.weight"] = (512, 2048, 1, 1)
        shapes[f"{p}.filter_gen_conv.bias"] = (512,)
        shapes[f"{p}.input_redu_conv.conv.weight"] = (512, 2048, 1, 1)
        bn(f"{p}.input_redu_conv.bn", 512)
        bn(f"{p}.norm", 512)
    shapes["decode_head.bottleneck.conv.weight"] = (512, 2048 + 4 * 512, 3, 3)
    bn("decode_head.bottleneck.bn", 512)
    shapes["decode_head.conv_seg.weight"] = (num_classes, 512, 1, 1)
    shapes["decode_head.conv_seg.bias"] = (num_classes,)
    if aux:
        shapes["auxiliary_head.convs.0.conv.weight"] = (256, 1024, 3, 3)
        bn("auxiliary_head.convs.0.bn", 256)
        shapes["auxiliary_head.conv_seg.weight"] = (num_classes, 256, 1, 1)
        shapes["auxiliary_head.conv_seg.bias"] = (num_classes,)
    return shapes


def random_state_dict(shapes, seed: int = 0) -> dict[str, torch.Tensor]:
    return _random_state_dict(shapes, seed)


@pytest.mark.parametrize("depth", [50, 101])
def test_checkpoint_loads_strictly(depth):
    src = random_state_dict(mmseg_shapes(depth))
    out = convert({"meta": {"mmseg_version": "1.2.2"}, "state_dict": src})
    with torch.device("meta"):
        model = dmnet(depth=depth, num_classes=150)
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert out["backbone.deep_stem.3.weight"] is src["backbone.stem.3.weight"]
    assert out["decode_head.dcm_modules.2.norm.running_var"] is src["decode_head.dcm_modules.2.norm.running_var"]


def test_without_aux_head_and_module_prefix():
    src = random_state_dict(mmseg_shapes(50, num_classes=19, aux=False))
    out = convert({f"module.{k}": v for k, v in src.items()})
    with torch.device("meta"):
        model = dmnet(depth=50, num_classes=19, aux=False)
    assert out.keys() == model.state_dict().keys()
    assert convert_key("backbone.stem.7.running_mean") == "backbone.deep_stem.7.running_mean"


def test_converted_stem_computes_mmseg_stem():
    src = random_state_dict(mmseg_shapes(50), seed=3)
    model = dmnet(depth=50, num_classes=150).eval()
    model.load_state_dict(convert(src), strict=True)
    x = torch.randn(1, 3, 16, 16)
    h = x
    for i, stride in zip((0, 3, 6), (2, 1, 1)):
        p = f"backbone.stem.{i + 1}"
        h = F.conv2d(h, src[f"backbone.stem.{i}.weight"], None, stride, 1)
        h = F.relu(F.batch_norm(h, src[f"{p}.running_mean"], src[f"{p}.running_var"], src[f"{p}.weight"],
                                src[f"{p}.bias"], False, 0.0, 1e-5))
    with torch.no_grad():
        assert torch.allclose(model.backbone.stem(x), h, atol=1e-5)


def test_errors():
    with pytest.raises(StateDictMismatchError, match="unknown keys"):
        convert({"backbone.conv1.weight": torch.zeros(1), "decode_head.conv_seg.weight": torch.zeros(1)})
    with pytest.raises(StateDictMismatchError, match="unknown keys"):
        convert({"backbone.stem.0.weight": torch.zeros(1), "decode_head.psp_modules.0.1.conv.weight": torch.zeros(1)})
    with pytest.raises(StateDictMismatchError, match="missing"):
        convert({"backbone.layer1.0.conv1.weight": torch.zeros(1)})
