import pytest
import torch
from support.export_check import exported_and_eager
from torch import nn

from zoo.archs import get_arch
from zoo.errors import InputError
from zoo.models.drn import DRNSeg, FixedBilinearUpsample, NonResidualBasicBlock, bilinear_kernel, drn, drn_seg
from zoo.models.resnet import BasicBlock, Bottleneck, ResNet
from zoo.registry import Preset
from zoo.tasks.image_classification import ClassificationPostprocess, ClassificationTransforms
from zoo.transforms import build_postprocess, build_transforms


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# Parameter counts of the ORIGINAL architectures: fyu/drn drn.py (commit d75db2e) instantiated with
# num_classes=1000 (drn_a_50 ... drn_d_105), counted with sum(p.numel() for p in model.parameters()).
# DRN-A-50 equals torchvision ResNet-50 (25,557,032).
FYU_PARAMS = {
    ("a", 50): 25_557_032, ("c", 26): 21_126_584, ("c", 42): 31_234_744, ("c", 58): 41_591_608,
    ("d", 22): 16_393_752, ("d", 38): 26_501_912, ("d", 54): 35_809_176, ("d", 105): 54_801_304,
}


# construction on the meta device, parameter counts, block rules -----------------------------------------
@pytest.mark.parametrize("variant,depth", list(FYU_PARAMS))
def test_meta_param_counts_match_fyu(variant, depth):
    with torch.device("meta"):
        m = drn(variant=variant, depth=depth)
        out = m.eval()(torch.empty(2, 3, 224, 224))
    assert out.shape == (2, 1000)
    assert _n_params(m) == FYU_PARAMS[(variant, depth)]


def test_seg_param_counts():
    # DRNSeg = DRN without fc + 1x1 seg (512 -> 19, bias); the bilinear `up` is a buffer, not a parameter
    for depth, fc in ((22, 513_000), (38, 513_000), (105, 513_000)):
        with torch.device("meta"):
            m = drn_seg(variant="d", depth=depth, num_classes=19)
        assert _n_params(m) == FYU_PARAMS[("d", depth)] - fc + 512 * 19 + 19
        assert m.up.weight.shape == (19, 1, 16, 16) and "up.weight" in m.state_dict()


def test_block_rules_c_and_d():
    with torch.device("meta"):
        c26, c58, d22, d105 = drn(variant="c", depth=26), drn(variant="c", depth=58), drn(variant="d", depth=22), \
            drn(variant="d", depth=105)
    # C: BasicBlocks in levels 1-2 even for C-58, non-residual BasicBlocks in levels 7-8
    assert all(type(b) is BasicBlock for b in (*c58.layer1, *c58.layer2))
    assert all(type(b) is Bottleneck for lvl in (3, 4, 5, 6) for b in getattr(c58, f"layer{lvl}"))
    assert all(isinstance(b, NonResidualBasicBlock) for b in (*c26.layer7, *c26.layer8))
    assert c58.layer7[0].downsample is not None and c26.layer7[0].downsample is None  # 2048 -> 512 in C-58
    # dilations: level 5 -> 2, level 6 -> 4, level 7 -> 2, level 8 -> 1, every block (new_level=False)
    assert [(b.conv1.dilation[0], b.conv2.dilation[0]) for b in c26.layer5] == [(2, 2)] * 2
    assert [(b.conv1.dilation[0], b.conv2.dilation[0]) for b in c26.layer6] == [(4, 4)] * 2
    assert (c26.layer7[0].conv1.dilation[0], c26.layer8[0].conv1.dilation[0]) == (2, 1)
    assert [b.conv2.dilation[0] for b in d105.layer5] == [2] * 23 and d105.layer5[0].conv2.stride == (1, 1)
    assert d105.layer3[0].conv2.stride == (2, 2) and d105.layer3[0].conv1.stride == (1, 1)  # stride on the 3x3
    # D: layer0 and levels 1, 2, 7, 8 are conv-BN-ReLU stacks
    assert [type(m) for m in d22.layer0] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert d22.layer0[0].kernel_size == (7, 7) and d22.layer0[0].stride == (1, 1)
    assert d22.layer2[0].stride == (2, 2) and d22.layer7[0].dilation == (2, 2) and d22.layer8[0].dilation == (1, 1)
    assert d22.fc.kernel_size == (1, 1) and d22.fc.bias is not None


def test_drn_a_first_blocks_keep_dilation_1():
    with torch.device("meta"):
        a = drn(variant="a", depth=50)
    assert isinstance(a, ResNet) and isinstance(a.fc, nn.Linear)
    assert [b.conv2.dilation[0] for b in a.layer3] == [1, 2, 2, 2, 2, 2]
    assert [b.conv2.dilation[0] for b in a.layer4] == [1, 4, 4]
    assert all(b.conv2.stride == (1, 1) for b in (*a.layer3, *a.layer4))


# forward passes -------------------------------------------------------------------------------------------
def test_classification_forward_train_and_eval():
    torch.manual_seed(0)
    m = drn(variant="c", depth=26, num_classes=7)
    x = torch.randn(2, 3, 64, 64)
    assert m.train()(x).shape == (2, 7)
    with torch.no_grad():
        out = m.eval()(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_nonresidual_block_has_no_identity_path():
    torch.manual_seed(0)
    blk = NonResidualBasicBlock(8, 8).eval()
    with torch.no_grad():
        for p in blk.parameters():
            p.zero_()  # conv weights 0, BN affine 0 -> a residual block would return relu(x)
        x = torch.rand(1, 8, 5, 5)
        assert torch.equal(blk(x), torch.zeros_like(x))
        assert torch.equal(BasicBlock(8, 8).eval().requires_grad_(False).apply(_zero)(x), x)


def _zero(m):
    for p in m.parameters(recurse=False):
        p.data.zero_()


def test_features_only_shapes():
    torch.manual_seed(0)
    m = drn(variant="d", depth=22, features_only=True, out_indices=tuple(range(9))).eval()
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        feats = m(x)
    assert [tuple(f.shape[1:]) for f in feats] == [
        (16, 64, 48), (16, 64, 48), (32, 32, 24), (64, 16, 12), (128, 8, 6), (256, 8, 6), (512, 8, 6),
        (512, 8, 6), (512, 8, 6)]
    assert m.feature_channels == (16, 16, 32, 64, 128, 256, 512, 512, 512)
    assert not hasattr(m, "fc") and not hasattr(m, "avgpool")
    with torch.device("meta"):
        d105 = drn(variant="d", depth=105, features_only=True, out_indices=(4, 6, 8))
        shapes = [tuple(f.shape) for f in d105(torch.empty(1, 3, 64, 64))]
        a50 = drn(variant="a", depth=50, features_only=True)
        a_shapes = [tuple(f.shape) for f in a50(torch.empty(1, 3, 64, 64))]
    assert shapes == [(1, 512, 8, 8), (1, 2048, 8, 8), (1, 512, 8, 8)]
    assert a_shapes == [(1, 256, 16, 16), (1, 512, 8, 8), (1, 1024, 8, 8), (1, 2048, 8, 8)]


@pytest.mark.parametrize("variant,depth", [("d", 22), ("c", 26), ("d", 105)])
def test_seg_forward_full_resolution(variant, depth):
    torch.manual_seed(0)
    m = drn_seg(variant=variant, depth=depth, num_classes=19)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert m.train()(x).shape == (1, 19, 64, 64)
        out = m.eval()(x)
    assert out.shape == (1, 19, 64, 64) and torch.isfinite(out).all()


def test_bilinear_upsample_weights_and_interpolation():
    k = bilinear_kernel(16, dtype=torch.float64)
    # fyu fill_up_weights: f = 8, c = 15/16, w[i, j] = (1 - |i/f - c|)(1 - |j/f - c|)
    assert k[7, 7] == pytest.approx((1 - 1 / 16) ** 2) and k[0, 0] == pytest.approx((1 / 16) ** 2)
    assert k[0, 15] == pytest.approx(1 / 16 * (1 - abs(15 / 8 - 15 / 16)))
    up = FixedBilinearUpsample(3, 8).double()
    assert up.weight.requires_grad is False and dict(up.named_buffers()).keys() == {"weight"}
    with torch.no_grad():
        const = up(torch.full((1, 3, 4, 4), 2.0, dtype=torch.float64))
        ramp = up(torch.arange(6, dtype=torch.float64).view(1, 1, 1, 6).expand(1, 3, 6, 6).contiguous())
    assert const.shape == (1, 3, 32, 32)
    assert torch.allclose(const[..., 4:-4, 4:-4], torch.full_like(const[..., 4:-4, 4:-4], 2.0))
    # interior of a ramp stays linear: output column u reads input (u + 0.5) / 8 - 0.5
    cols = ramp[0, 0, 20, 4:44]
    assert torch.allclose(cols, (torch.arange(4, 44, dtype=torch.float64) + 0.5) / 8 - 0.5)


def test_meta_build_then_materialise_up():
    with torch.device("meta"):
        m = drn_seg(variant="d", depth=22, num_classes=5)
    assert m.up.weight.is_meta
    m.up.to_empty(device="cpu")
    m.up.reset_parameters()
    assert torch.allclose(m.up.weight[3, 0], bilinear_kernel(16))


# errors and registration ----------------------------------------------------------------------------------
def test_errors():
    with pytest.raises(ValueError, match="unknown DRN"):
        drn(variant="d", depth=23)
    with pytest.raises(ValueError, match="depth 50"):
        drn(variant="a", depth=26)
    with pytest.raises(ValueError, match="out_indices"):
        drn(variant="d", depth=22, features_only=True, out_indices=(9,))
    with pytest.raises(ValueError, match="DRN-C and DRN-D"):
        drn_seg(variant="a", depth=50)
    with pytest.raises(ValueError, match="features_only"):
        DRNSeg(drn(variant="d", depth=22), 19)
    with torch.device("meta"), pytest.raises(InputError, match="C=3"):
        drn(variant="d", depth=22)(torch.empty(1, 4, 32, 32))


def test_registered():
    assert get_arch("drn") is drn and get_arch("drn_seg") is drn_seg


# classification presets -----------------------------------------------------------------------------------
def test_classification_presets():
    t = build_transforms(Preset("classification", {}))
    assert isinstance(t, ClassificationTransforms)
    img = torch.randint(0, 256, (3, 300, 400), dtype=torch.uint8)
    x = t(img)
    assert x.shape == (1, 3, 224, 224)
    # the centre crop of the resized image, normalised with the ImageNet statistics
    flat = torch.full((1, 3, 256, 320), 0.5)
    y = t(flat)
    expected = (0.5 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(y[0, :, 0, 0], expected, atol=1e-5)
    post = build_postprocess(Preset("classification", {"top_k": 3}))
    assert isinstance(post, ClassificationPostprocess)
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 1.0, 0.5, 0.0]])
    res = post(logits, (224, 224))
    assert res["labels"].tolist() == [[1, 3, 2], [0, 1, 2]]
    assert torch.allclose(res["scores"][0], logits[0].softmax(0)[[1, 3, 2]])
    assert post({"out": logits}, (1, 1))["scores"].shape == (2, 3)
    with pytest.raises(InputError):
        post(torch.zeros(1, 3, 4, 4), (4, 4))
    with pytest.raises(InputError, match="smaller than the crop"):
        ClassificationTransforms(resize=None)(torch.zeros(1, 3, 100, 100))


# torch.export -----------------------------------------------------------------------------------------------
def test_export_drn_seg():
    torch.manual_seed(0)
    m = drn_seg(variant="d", depth=22, num_classes=4).eval()
    x = torch.randn(1, 3, 32, 32)
    assert torch.allclose(*exported_and_eager(m, x), atol=1e-5)


@pytest.mark.slow
def test_export_drn_classifier():
    torch.manual_seed(0)
    m = drn(variant="c", depth=26, num_classes=4).eval()
    x = torch.randn(1, 3, 32, 32)
    assert torch.allclose(*exported_and_eager(m, x), atol=1e-5)
