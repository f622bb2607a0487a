"""zoo.models.efficientnet_cc: shapes, parameter counts against timm, TF-SAME padding, CondConv routing."""
import math

import pytest
import torch
import torch.nn.functional as F
from support.export_check import exported_and_eager

from zoo.archs import get_arch
from zoo.errors import InputError
from zoo.models.efficientnet_cc import EfficientNetCC, InvertedResidual, TFSamePad, efficientnet_cc
from zoo.ops.cond_conv import CondConv2d, CondConvRouting

VARIANTS = [("b0", 4, "tf_efficientnet_cc_b0_4e"), ("b0", 8, "tf_efficientnet_cc_b0_8e"),
            ("b1", 8, "tf_efficientnet_cc_b1_8e")]


def n_params(m):
    return sum(p.numel() for p in m.parameters())


# shapes ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant,experts,_", VARIANTS)
def test_meta_build_and_structure(variant, experts, _):
    with torch.device("meta"):
        m = efficientnet_cc(variant=variant, num_experts=experts)
        out = m(torch.empty(2, 3, 64, 64))
    assert out.shape == (2, 1000)
    assert [len(s) for s in m.blocks] == ([1, 2, 2, 3, 3, 4, 1] if variant == "b0" else [2, 3, 3, 4, 4, 5, 2])
    for s, stage in enumerate(m.blocks):
        for block in stage:
            cc = s >= 4  # only the last three stages use CondConv
            assert isinstance(getattr(block, "routing", None), CondConvRouting) == cc
            if cc:
                assert all(isinstance(c, CondConv2d) and c.num_experts == experts
                           for c in (block.conv_pw, block.conv_dw, block.conv_pwl))
    assert m.bn1.eps == 1e-3 and isinstance(m.bn1.act, torch.nn.SiLU)


def test_forward_eval_and_train():
    torch.manual_seed(0)
    m = efficientnet_cc(variant="b0", num_experts=4, num_classes=10)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        y_eval = m.eval()(x)
        y_train = m.train()(torch.randn(2, 3, 64, 64))
    assert y_eval.shape == (1, 10) and y_train.shape == (2, 10)
    assert torch.isfinite(y_eval).all() and torch.isfinite(y_train).all()


def test_routing_is_shared_within_a_block():
    """One routing per block: the three CondConvs of a block see the same (B, E) weights."""
    torch.manual_seed(0)
    block = InvertedResidual(16, 16, 5, 1, 6, 0.25, 1e-3, True, 0.0, num_experts=3).eval()
    seen = []
    for conv in (block.conv_pw, block.conv_dw, block.conv_pwl):
        conv.register_forward_hook(lambda mod, args, out: seen.append(args[1]))
    x = torch.randn(2, 16, 9, 9)
    with torch.no_grad():
        block(x)
        expected = torch.sigmoid(block.routing.fc(x.mean((2, 3))))
    assert len(seen) == 3 and all(torch.equal(r, expected) for r in seen)


# padding ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size,k,s,expected", [(64, 3, 2, (0, 1)), (65, 3, 2, (1, 1)), (7, 5, 2, (2, 2)),
                                                (8, 5, 2, (1, 2)), (10, 3, 1, (1, 1))])
def test_tf_same_pad_amounts(size, k, s, expected):
    x = torch.zeros(1, 1, size, size)
    y = TFSamePad(k, s)(x)
    assert y.shape[-1] == size + sum(expected)
    assert F.conv2d(y, torch.zeros(1, 1, k, k), stride=s).shape[-1] == math.ceil(size / s)
    # the padding is at the start (left/top) for expected[0] pixels: mark the input and find it
    z = TFSamePad(k, s)(torch.ones(1, 1, size, size))
    assert z[0, 0, expected[0], expected[0]] == 1 and (expected[0] == 0 or z[0, 0, 0, 0] == 0)


def test_pytorch_padding_option():
    with torch.device("meta"):
        m = efficientnet_cc(tf_same_padding=False)
    assert isinstance(m.stem_pad, torch.nn.Identity) and m.conv_stem.padding == (1, 1)
    assert m(torch.empty(1, 3, 64, 64, device="meta")).shape == (1, 1000)


# parameter counts against timm -----------------------------------------------------------------------------
@pytest.mark.parametrize("variant,experts,name", VARIANTS)
def test_parameters_and_keys_match_timm(variant, experts, name):
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        ours = efficientnet_cc(variant=variant, num_experts=experts)
        ref = timm.create_model(name, pretrained=False)
    assert n_params(ours) == n_params(ref)
    theirs = {k.replace("routing_fn", "routing.fc"): tuple(v.shape) for k, v in ref.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == theirs


def test_parameter_counts_recorded():
    """The numbers in the model cards (computed from timm 1.0.31; checked above when timm is present)."""
    with torch.device("meta"):
        counts = [n_params(efficientnet_cc(variant=v, num_experts=e)) for v, e, _ in VARIANTS]
    assert counts == [13_314_116, 24_013_284, 39_715_968]


# errors and registration -----------------------------------------------------------------------------------
def test_errors():
    with pytest.raises(ValueError, match="variant"):
        efficientnet_cc(variant="b2")
    with pytest.raises(ValueError, match="num_experts"):
        EfficientNetCC(num_experts=0)
    with torch.device("meta"), pytest.raises(InputError, match="C=3"):
        efficientnet_cc()(torch.empty(1, 1, 32, 32))


def test_registered():
    assert get_arch("efficientnet_cc") is efficientnet_cc


# torch.export ----------------------------------------------------------------------------------------------
def test_export():
    torch.manual_seed(0)
    m = efficientnet_cc(variant="b0", num_experts=4, num_classes=7).eval()
    x = torch.randn(2, 3, 33, 47)
    assert torch.allclose(*exported_and_eager(m, x), atol=1e-5)
