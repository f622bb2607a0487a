"""The kazuto1011/deeplab-pytorch layout is written out here from that repository's architecture
(libs/models/msc.py, deeplabv2.py, resnet.py), independently of zoo's model."""
import pytest
import torch
import torch.nn.functional as F

from zoo.converters.kazuto_deeplab import convert, convert_key
from zoo.errors import StateDictMismatchError
from zoo.models.deeplab import deeplabv2

N_BLOCKS = (3, 4, 23, 3)  # layer2..layer5 = res2..res5
CHANNELS = (256, 512, 1024, 2048)
STRIDES = (1, 2, 1, 1)
DILATIONS = (1, 1, 2, 4)
RATES = (6, 12, 18, 24)


def kazuto_shapes(n_classes: int = 21) -> dict[str, tuple[int, ...]]:
    """Key -> shape of DeepLabV2_ResNet101_MSC(n_classes).state_dict()."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv_bn(prefix: str, cin: int, cout: int, k: int) -> None:
        shapes[f"{prefix}.conv.weight"] = (cout, cin, k, k)
        for t in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.bn.{t}"] = (cout,)
        shapes[f"{prefix}.bn.num_batches_tracked"] = ()

    conv_bn("base.layer1.conv1", 3, 64, 7)
    cin = 64
    for layer, (n, cout) in enumerate(zip(N_BLOCKS, CHANNELS), start=2):
        mid = cout // 4
        for b in range(1, n + 1):
            p = f"base.layer{layer}.block{b}"
            conv_bn(f"{p}.reduce", cin if b == 1 else cout, mid, 1)
            conv_bn(f"{p}.conv3x3", mid, mid, 3)
            conv_bn(f"{p}.increase", mid, cout, 1)
            if b == 1:
                conv_bn(f"{p}.shortcut", cin, cout, 1)
        cin = cout
    for i in range(len(RATES)):
        shapes[f"base.aspp.c{i}.weight"] = (n_classes, 2048, 3, 3)
        shapes[f"base.aspp.c{i}.bias"] = (n_classes,)
    return shapes


def random_state_dict(shapes, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(20000)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("bn.weight"):
            sd[key] = torch.rand(shape, generator=g) * 0.5 + 0.5
        elif key.endswith("conv.weight"):
            fan_in = shape[1] * shape[2] * shape[3]
            sd[key] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
        else:
            sd[key] = torch.randn(shape, generator=g) * 0.1
    return sd


def kazuto_forward_single(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """DeepLabV2 (one scale) computed straight from the source state dict, following the source
    architecture: _Stem (7x7/2 + BN + ReLU, max-pool 3/2/1 ceil_mode), MSRA bottlenecks with the
    stride on `reduce`, every block of layer4/layer5 at dilation 2/4, ASPP branches summed."""

    def cbr(p, x, stride=1, padding=0, dilation=1, relu=True):
        y = F.conv2d(x, sd[f"{p}.conv.weight"], None, stride, padding, dilation)
        y = F.batch_norm(y, sd[f"{p}.bn.running_mean"], sd[f"{p}.bn.running_var"], sd[f"{p}.bn.weight"],
                         sd[f"{p}.bn.bias"], False, 0.0, 1e-5)
        return F.relu(y) if relu else y

    h = cbr("base.layer1.conv1", x, 2, 3)
    h = F.max_pool2d(h, 3, 2, 1, ceil_mode=True)
    for layer, (n, s, d) in enumerate(zip(N_BLOCKS, STRIDES, DILATIONS), start=2):
        for b in range(1, n + 1):
            p = f"base.layer{layer}.block{b}"
            stride = s if b == 1 else 1
            y = cbr(f"{p}.reduce", h, stride)
            y = cbr(f"{p}.conv3x3", y, 1, d, d)
            y = cbr(f"{p}.increase", y, relu=False)
            h = F.relu(y + (cbr(f"{p}.shortcut", h, stride, relu=False) if b == 1 else h))
    return sum(F.conv2d(h, sd[f"base.aspp.c{i}.weight"], sd[f"base.aspp.c{i}.bias"], 1, r, r)
               for i, r in enumerate(RATES))


@pytest.fixture(scope="module")
def source():
    return random_state_dict(kazuto_shapes())


def test_converts_and_loads_strictly(source):
    converted = convert(source)
    # stem 6 tensors, 33 blocks x 3 conv-BN x 6, 4 shortcuts x 6, 4 ASPP convs x 2
    assert len(source) == len(converted) == 6 + 33 * 18 + 4 * 6 + 8
    model = deeplabv2(num_classes=21).eval()
    model.load_state_dict(converted, strict=True)
    b = model.backbone
    assert torch.equal(b.layer4[1].conv2.weight, source["base.layer5.block2.conv3x3.conv.weight"])
    assert torch.equal(b.layer2[0].downsample[1].running_var, source["base.layer3.block1.shortcut.bn.running_var"])
    assert torch.equal(b.layer2[0].downsample[0].weight, source["base.layer3.block1.shortcut.conv.weight"])
    assert torch.equal(b.layer3[22].bn3.bias, source["base.layer4.block23.increase.bn.bias"])
    assert torch.equal(b.bn1.running_mean, source["base.layer1.conv1.bn.running_mean"])
    assert torch.equal(model.aspp.convs[3].bias, source["base.aspp.c3.bias"])
    assert model.aspp.rates[3] == 24

    x = torch.randn(1, 3, 33, 41)
    with torch.no_grad():
        ours = model.forward_single(x)
        expected = kazuto_forward_single(source, x)
    assert ours.shape == expected.shape == (1, 21, 5, 6)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


def test_frozen_bn_and_wrappers(source):
    frozen = deeplabv2(norm="frozen_bn")
    frozen.load_state_dict(convert(source), strict=True)
    bare = {k[len("base."):]: v for k, v in source.items()}  # DeepLabV2 without the MSC wrapper
    dp = {"state_dict": {"module." + k: v for k, v in source.items()}}
    assert convert(bare).keys() == convert(dp).keys() == convert(source).keys()


def test_key_mapping_examples():
    assert convert_key("base.layer1.conv1.conv.weight") == "backbone.conv1.weight"
    assert convert_key("base.layer1.conv1.bn.num_batches_tracked") == "backbone.bn1.num_batches_tracked"
    assert convert_key("base.layer2.block1.reduce.conv.weight") == "backbone.layer1.0.conv1.weight"
    assert convert_key("base.layer4.block10.conv3x3.bn.weight") == "backbone.layer3.9.bn2.weight"
    assert convert_key("base.layer5.block3.increase.conv.weight") == "backbone.layer4.2.conv3.weight"
    assert convert_key("base.layer3.block1.shortcut.bn.running_mean") == "backbone.layer2.0.downsample.1.running_mean"
    assert convert_key("base.aspp.c2.weight") == "aspp.convs.2.weight"
    assert convert_key("base.fc.weight") is None and convert_key("base.layer6.block1.reduce.conv.weight") is None


def test_rejects_unknown_keys(source):
    with pytest.raises(StateDictMismatchError, match="unknown"):
        convert({**source, "base.fc8.weight": torch.zeros(1)})
    with pytest.raises(StateDictMismatchError, match="missing"):
        convert({k: v for k, v in source.items() if "aspp" not in k})
