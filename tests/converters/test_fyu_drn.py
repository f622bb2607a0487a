"""The fyu/drn layouts are written out here from that repository's drn.py / segment.py (DRN.__init__,
_make_layer, _make_conv_layers; DRNSeg.base = Sequential(children[:-2])), independently of zoo's model.
The 2017 checkpoints carry no BatchNorm ``num_batches_tracked``."""
import pytest
import torch
import torch.nn.functional as F
from support.layouts import resnet_block_shapes

from zoo.converters.fyu_drn import convert, convert_key
from zoo.errors import StateDictMismatchError
from zoo.models.drn import drn, drn_seg

CH = (16, 32, 64, 128, 256, 512, 512, 512)
LAYERS = {("c", 26): ("basic", (1, 1, 2, 2, 2, 2, 1, 1)), ("c", 42): ("basic", (1, 1, 3, 4, 6, 3, 1, 1)),
          ("c", 58): ("bottleneck", (1, 1, 3, 4, 6, 3, 1, 1)), ("d", 22): ("basic", (1, 1, 2, 2, 2, 2, 1, 1)),
          ("d", 38): ("basic", (1, 1, 3, 4, 6, 3, 1, 1)), ("d", 54): ("bottleneck", (1, 1, 3, 4, 6, 3, 1, 1)),
          ("d", 105): ("bottleneck", (1, 1, 3, 4, 23, 3, 1, 1))}


def fyu_shapes(variant: str, depth: int, seg_classes: int | None = None) -> dict[str, tuple[int, ...]]:
    """Key -> shape of fyu drn_<variant>_<depth>() (or of DRNSeg over it) state dicts, 2017 style."""
    kind, layers = LAYERS[(variant, depth)]
    shapes: dict[str, tuple[int, ...]] = {}
    children: list[str] = []  # registration order of the DRN's children

    def bn(p, c):
        for t in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{p}.{t}"] = (c,)

    inplanes = CH[0]

    def make_layer(name, block, planes, n, stride):
        nonlocal inplanes
        exp = 4 if block == "bottleneck" else 1
        for i in range(n):
            downsample = i == 0 and (stride != 1 or inplanes != planes * exp)
            inplanes = resnet_block_shapes(shapes, f"{name}.{i}", block, inplanes, planes, downsample=downsample, bn=bn)
        children.append(name)

    def make_convs(name, planes, n):
        nonlocal inplanes
        for i in range(n):
            shapes[f"{name}.{3 * i}.weight"] = (planes, inplanes, 3, 3)
            bn(f"{name}.{3 * i + 1}", planes)
            inplanes = planes
        children.append(name)

    if variant == "c":
        shapes["conv1.weight"] = (CH[0], 3, 7, 7)
        bn("bn1", CH[0])
        children += ["conv1", "bn1", "relu"]
        make_layer("layer1", "basic", CH[0], layers[0], 1)
        make_layer("layer2", "basic", CH[1], layers[1], 2)
    else:
        shapes["layer0.0.weight"] = (CH[0], 3, 7, 7)
        bn("layer0.1", CH[0])
        children.append("layer0")
        make_convs("layer1", CH[0], layers[0])
        make_convs("layer2", CH[1], layers[1])
    for lvl in (3, 4, 5, 6):
        make_layer(f"layer{lvl}", kind, CH[lvl - 1], layers[lvl - 1], 2 if lvl in (3, 4) else 1)
    for lvl in (7, 8):
        if variant == "c":
            make_layer(f"layer{lvl}", "basic", CH[lvl - 1], layers[lvl - 1], 1)
        else:
            make_convs(f"layer{lvl}", CH[lvl - 1], layers[lvl - 1])
    if seg_classes is None:
        shapes["fc.weight"] = (1000, 512, 1, 1)
        shapes["fc.bias"] = (1000,)
        return shapes
    index = {name: i for i, name in enumerate(children)}
    seg = {}
    for key, shape in shapes.items():
        head, rest = key.split(".", 1)
        seg[f"base.{index[head]}.{rest}"] = shape
    seg.update({"seg.weight": (seg_classes, 512, 1, 1), "seg.bias": (seg_classes,),
                "up.weight": (seg_classes, 1, 16, 16)})
    return seg


def random_state_dict(shapes, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in shapes.items():
        if key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        elif len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            sd[key] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
        else:
            sd[key] = torch.randn(shape, generator=g) * 0.1 + (1.0 if key.endswith("weight") else 0.0)
    return sd


@pytest.mark.parametrize("variant,depth", list(LAYERS))
def test_classification_checkpoint_loads_strictly(variant, depth):
    src = random_state_dict(fyu_shapes(variant, depth))
    out = convert(src)
    with torch.device("meta"):
        model = drn(variant=variant, depth=depth)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in out.items()} == expected
    assert all(out[k] is v for k, v in src.items())  # tensors are passed through
    assert out["layer3.0.bn1.num_batches_tracked"].dtype == torch.long


@pytest.mark.parametrize("variant,depth", [("c", 26), ("d", 22), ("d", 105)])
def test_seg_checkpoint_loads_strictly(variant, depth):
    src = random_state_dict(fyu_shapes(variant, depth, seg_classes=19))
    wrapped = {"state_dict": {f"module.{k}": v for k, v in src.items()}}
    for sd in (src, wrapped):
        out = convert(sd)
        with torch.device("meta"):
            model = drn_seg(variant=variant, depth=depth, num_classes=19)
        assert {k: tuple(v.shape) for k, v in out.items()} == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert convert_key("base.3.0.conv1.weight", "c") == "base.layer1.0.conv1.weight"
    assert convert_key("base.0.0.weight", "d") == "base.layer0.0.weight"
    assert convert_key("base.1.weight", "c") == "base.bn1.weight"


def _bn(sd, p, x):
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                        False, 0.0, 1e-5)


def fyu_drn_d22_seg_forward(sd, x):
    """DRNSeg(drn_d_22) from the source state dict: base.0 layer0, base.1-2 / base.7-8 conv stacks,
    base.3-6 BasicBlocks (levels 5/6 at dilation 2/4), seg, bilinear up (fixed weights)."""
    def convs(p, x, stride, dil):
        return F.relu(_bn(sd, f"{p}.1", F.conv2d(x, sd[f"{p}.0.weight"], None, stride, dil, dil)))

    def basic(p, x, stride, dil):
        y = F.relu(_bn(sd, f"{p}.bn1", F.conv2d(x, sd[f"{p}.conv1.weight"], None, stride, dil, dil)))
        y = _bn(sd, f"{p}.bn2", F.conv2d(y, sd[f"{p}.conv2.weight"], None, 1, dil, dil))
        res = x
        if f"{p}.downsample.0.weight" in sd:
            res = _bn(sd, f"{p}.downsample.1", F.conv2d(x, sd[f"{p}.downsample.0.weight"], None, stride))
        return F.relu(y + res)

    h = F.relu(_bn(sd, "base.0.1", F.conv2d(x, sd["base.0.0.weight"], None, 1, 3)))
    h = convs("base.1", h, 1, 1)
    h = convs("base.2", h, 2, 1)
    for i, (stride, dil) in zip((3, 4, 5, 6), ((2, 1), (2, 1), (1, 2), (1, 4))):
        for b in range(2):
            h = basic(f"base.{i}.{b}", h, stride if b == 0 else 1, dil)
    h = convs("base.7", h, 1, 2)
    h = convs("base.8", h, 1, 1)
    h = F.conv2d(h, sd["seg.weight"], sd["seg.bias"])
    return F.conv_transpose2d(h, sd["up.weight"], None, 8, 4, groups=h.shape[1])


def test_converted_seg_model_matches_source_forward():
    torch.manual_seed(0)
    src = random_state_dict(fyu_drn_d22_seg_shapes := fyu_shapes("d", 22, seg_classes=5), seed=1)
    assert "base.5.0.conv1.weight" in fyu_drn_d22_seg_shapes
    model = drn_seg(variant="d", depth=22, num_classes=5)
    model.load_state_dict(convert(src), strict=True)
    x = torch.randn(1, 3, 40, 48)
    with torch.no_grad():
        ours = model.eval()(x)
        ref = fyu_drn_d22_seg_forward(src, x)
    assert ours.shape == ref.shape == (1, 5, 40, 48)
    assert torch.allclose(ours, ref, atol=1e-4, rtol=1e-4)


def test_c26_classifier_matches_source_forward():
    """drn_c_26 from the source dict: levels 7-8 add no residual; fc is a 1x1 conv after global pooling."""
    src = random_state_dict(fyu_shapes("c", 26), seed=2)
    sd = src

    def basic(p, x, stride, dil, residual=True):
        y = F.relu(_bn(sd, f"{p}.bn1", F.conv2d(x, sd[f"{p}.conv1.weight"], None, stride, dil, dil)))
        y = _bn(sd, f"{p}.bn2", F.conv2d(y, sd[f"{p}.conv2.weight"], None, 1, dil, dil))
        if not residual:
            return F.relu(y)
        res = x
        if f"{p}.downsample.0.weight" in sd:
            res = _bn(sd, f"{p}.downsample.1", F.conv2d(x, sd[f"{p}.downsample.0.weight"], None, stride))
        return F.relu(y + res)

    x = torch.randn(1, 3, 32, 32)
    h = F.relu(_bn(sd, "bn1", F.conv2d(x, sd["conv1.weight"], None, 1, 3)))
    plan = [(1, 1, 1, 1), (2, 1, 2, 1), (3, 2, 2, 1), (4, 2, 2, 1), (5, 2, 1, 2), (6, 2, 1, 4), (7, 1, 1, 2), (8, 1, 1, 1)]
    for lvl, n, stride, dil in plan:
        for b in range(n):
            h = basic(f"layer{lvl}.{b}", h, stride if b == 0 else 1, dil, residual=lvl < 7)
    ref = F.conv2d(h.mean((2, 3), keepdim=True), sd["fc.weight"], sd["fc.bias"]).flatten(1)
    model = drn(variant="c", depth=26)
    model.load_state_dict(convert(src), strict=True)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), ref, atol=1e-4, rtol=1e-4)


def test_drn_a_torchvision_keys_pass_through():
    with torch.device("meta"):
        model = drn(variant="a", depth=50)
    src = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in model.state_dict().items()}
    out = convert(src)
    assert out.keys() == src.keys()


def test_errors():
    with pytest.raises(StateDictMismatchError, match="unknown keys"):
        convert({"layer0.0.weight": torch.zeros(1), "backbone.conv1.weight": torch.zeros(1)})
    with pytest.raises(StateDictMismatchError, match="unknown keys"):
        convert({"base.0.0.weight": torch.zeros(1), "base.9.0.weight": torch.zeros(1)})  # D has base.0..8
    with pytest.raises(StateDictMismatchError, match="unknown keys"):
        convert({"base.0.weight": torch.zeros(1), "base.2.weight": torch.zeros(1)})  # C: index 2 is the ReLU
    with pytest.raises(StateDictMismatchError, match="no 'layer"):
        convert({"seg.weight": torch.zeros(1)})
