"""Tests of zoo.ops.aspp particular to ASPP. The shared operator contract (fast == reference on random
shapes, gradcheck, meta device, bfloat16, torch.export) is tests/ops/test_contract.py over the "aspp"
family of tests/support/op_table.py."""
import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from support.op_table import aspp_v3, randomise_norms
from zoo.errors import InputError
from zoo.ops.aspp import ASPP, aspp_reference, aspp_v2, atrous_conv2d


# 1. shapes ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["v2", "v3"])
@pytest.mark.parametrize("hw", [(1, 1), (5, 7), (9, 9)])
def test_shapes(mode, hw):
    m = ASPP(16, 5, mode=mode).eval()
    y = m(torch.randn(2, 16, *hw))
    assert y.shape == (2, 5, *hw)


def test_default_rates_and_key_names():
    assert ASPP(4, 3, mode="v2").rates == (6, 12, 18, 24)
    assert ASPP(4, 3, mode="v3").rates == (6, 12, 18)
    v2 = ASPP(4, 3, mode="v2").state_dict()
    assert set(v2) == {f"convs.{i}.{t}" for i in range(4) for t in ("weight", "bias")}
    assert v2["convs.3.weight"].shape == (3, 4, 3, 3)
    v3 = ASPP(4, 3, (12, 24, 36), mode="v3").state_dict()
    for key, shape in {
        "convs.0.0.weight": (3, 4, 1, 1),
        "convs.0.1.running_var": (3,),
        "convs.3.0.weight": (3, 4, 3, 3),
        "convs.4.1.weight": (3, 4, 1, 1),
        "convs.4.2.bias": (3,),
        "project.0.weight": (3, 15, 1, 1),
        "project.1.weight": (3,),
    }.items():
        assert v3[key].shape == shape, key


def test_v3_keys_match_torchvision():
    from torchvision.models.segmentation.deeplabv3 import ASPP as TVASPP

    tv = TVASPP(8, (2, 3, 4), out_channels=6)
    ours = ASPP(8, 6, (2, 3, 4), mode="v3")
    assert {k: v.shape for k, v in tv.state_dict().items()} == {k: v.shape for k, v in ours.state_dict().items()}
    randomise_norms(tv, seed=3)
    ours.load_state_dict(tv.state_dict())
    x = torch.randn(2, 8, 7, 5)
    torch.testing.assert_close(ours.eval()(x), tv.eval()(x), rtol=1e-5, atol=1e-6)


# 2. exceptions --------------------------------------------------------------------------------------
def test_bad_inputs():
    m = ASPP(8, 4, mode="v2")
    with pytest.raises(InputError, match="C=8"):
        m(torch.randn(1, 7, 5, 5))
    with pytest.raises(InputError, match="unsqueeze"):
        m(torch.randn(8, 5, 5))
    with pytest.raises(InputError, match="floating"):
        aspp_v2(torch.ones(1, 8, 5, 5, dtype=torch.long), [c.weight for c in m.convs], None, m.rates)
    with pytest.raises(InputError, match="one weight"):
        aspp_v2(torch.randn(1, 8, 5, 5), [m.convs[0].weight], None, (1, 2))
    with pytest.raises(InputError, match="weights\\[0\\]"):
        aspp_v2(torch.randn(1, 8, 5, 5), [torch.randn(4, 8, 1, 1)], None, (1,))


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        ASPP(4, 4, mode="v4")
    with pytest.raises(ValueError, match="rates"):
        ASPP(4, 4, (0, 2))
    with pytest.raises(ValueError, match="norm_layer"):
        ASPP(4, 4, mode="v2", norm_layer=nn.BatchNorm2d)


# 3. fast == reference: training-mode BN and FrozenBatchNorm2d ---------------------------------------
def test_v3_fast_matches_reference_train_and_frozen_bn():
    m = aspp_v3(dropout=0.0, dtype=torch.float64).train()
    x = torch.randn(3, 8, 6, 7, dtype=torch.float64)
    torch.testing.assert_close(m(x), aspp_reference(m, x), rtol=1e-10, atol=1e-10)
    f = aspp_v3(norm_layer=FrozenBatchNorm2d, dtype=torch.float64).eval()
    assert isinstance(f.project[1], FrozenBatchNorm2d) and f.project[1].weight.dtype == torch.float64
    torch.testing.assert_close(f(x), aspp_reference(f, x), rtol=1e-10, atol=1e-10)


# 4. exact answers -----------------------------------------------------------------------------------
def test_exact_tiny():
    x = torch.arange(9.0).view(1, 1, 3, 3)
    ones = torch.ones(1, 1, 3, 3)
    # rate 2 on 3x3: the corner output sees the four corners, the centre output only itself
    y = atrous_conv2d(x, ones, None, 2)
    assert y[0, 0].tolist() == [[0 + 2 + 6 + 8, 1 + 7, 0 + 2 + 6 + 8], [3 + 5, 4, 3 + 5], [16, 8, 16]]
    # rate >= size: only the centre tap; v2 sums the branches and their biases
    y = aspp_v2(x, [2 * ones, 3 * ones], [torch.tensor([1.0]), torch.tensor([-0.5])], (3, 4))
    torch.testing.assert_close(y, 5 * x + 0.5)


def test_exact_v3_pooling_branch():
    # only the pooling branch is non-zero: the output is constant in space, ReLU(mean(x) * w)
    m = ASPP(1, 1, (2,), mode="v3", dropout=0.0).eval()
    with torch.no_grad():
        for branch in m.convs[:-1]:
            branch[0].weight.zero_()
        m.convs[-1][1].weight.fill_(2.0)
        m.project[0].weight.copy_(torch.tensor([0.0, 0.0, 1.5]).view(1, 3, 1, 1))
    x = torch.arange(12.0).view(1, 1, 3, 4)  # mean 5.5
    eps = m.project[1].eps
    bn = lambda v: v / (1 + eps) ** 0.5  # noqa: E731 (BN at init: mean 0, var 1)
    expected = bn(1.5 * bn(2.0 * 5.5))
    torch.testing.assert_close(m(x), torch.full((1, 1, 3, 4), expected))
