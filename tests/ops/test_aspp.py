import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from zoo.errors import InputError
from zoo.ops.aspp import ASPP, aspp_reference, aspp_v2, aspp_v2_reference, atrous_conv2d


def _randomise_norms(module: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial BN statistics and affine parameters, so that BN is not the identity."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
                c = m.running_mean.numel()
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.1)


def _v3(in_ch=8, out_ch=6, rates=(1, 2, 5), dtype=torch.float32, **kw) -> ASPP:
    torch.manual_seed(0)
    m = ASPP(in_ch, out_ch, rates, mode="v3", dtype=dtype, **kw)
    _randomise_norms(m, torch.Generator().manual_seed(1))
    return m


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
    _randomise_norms(tv, torch.Generator().manual_seed(3))
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


# 3. fast == reference -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("shape", [(1, 6, 9, 9), (2, 6, 7, 11), (3, 6, 4, 13), (1, 6, 2, 3)])
def test_v2_fast_matches_reference(dtype, tol, shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g, dtype=dtype)
    rates = (1, 3, 6, 12)  # 6 and 12 hit the degenerate shortcuts on the small maps
    ws = [torch.randn(5, 6, 3, 3, generator=g, dtype=dtype) for _ in rates]
    bs = [torch.randn(5, generator=g, dtype=dtype) for _ in rates]
    torch.testing.assert_close(aspp_v2(x, ws, bs, rates), aspp_v2_reference(x, ws, bs, rates), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("shape", [(1, 8, 9, 9), (2, 8, 5, 12), (3, 8, 3, 4)])
def test_v3_fast_matches_reference_eval(dtype, tol, shape):
    m = _v3(dtype=dtype).eval()
    x = torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(m(x), aspp_reference(m, x), rtol=tol, atol=tol)


def test_v3_fast_matches_reference_train_and_frozen_bn():
    m = _v3(dropout=0.0, dtype=torch.float64).train()
    x = torch.randn(3, 8, 6, 7, dtype=torch.float64)
    torch.testing.assert_close(m(x), aspp_reference(m, x), rtol=1e-10, atol=1e-10)
    f = _v3(norm_layer=FrozenBatchNorm2d, dtype=torch.float64).eval()
    assert isinstance(f.project[1], FrozenBatchNorm2d) and f.project[1].weight.dtype == torch.float64
    torch.testing.assert_close(f(x), aspp_reference(f, x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("hw,rate", [((4, 4), 4), ((3, 9), 5), ((9, 2), 2), ((6, 6), 2)])
def test_atrous_conv2d_equals_conv2d(hw, rate):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, *hw, generator=g, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64)
    b = torch.randn(4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(
        atrous_conv2d(x, w, b, rate), F.conv2d(x, w, b, padding=rate, dilation=rate), rtol=1e-12, atol=1e-12
    )


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


# 5. gradcheck ---------------------------------------------------------------------------------------
def test_gradcheck_v2():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    ws = [torch.randn(1, 2, 3, 3, dtype=torch.float64, generator=g, requires_grad=True) for _ in range(2)]
    b = torch.randn(1, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w0, w1, b: aspp_v2(x, [w0, w1], [b, b], (1, 4)), (x, *ws, b))


def test_gradcheck_v3():
    m = _v3(in_ch=2, out_ch=2, rates=(1, 3), dtype=torch.float64).eval()
    x = torch.randn(2, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))


# 6. meta device -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["v2", "v3"])
def test_meta(mode):
    m = ASPP(2048, 21, mode=mode, device="meta").eval()
    assert all(p.is_meta for p in m.parameters())
    assert m(torch.empty(2, 2048, 65, 65, device="meta")).shape == (2, 21, 65, 65)


# 7. bfloat16 ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["v2", "v3"])
def test_bfloat16(mode):
    m = ASPP(8, 4, (1, 2), mode=mode).eval()
    x = torch.randn(1, 8, 6, 5)
    y = m.to(torch.bfloat16)(x.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), m.float()(x), rtol=0.05, atol=0.05)


# 8. export ------------------------------------------------------------------------------------------
def test_export_dynamic_size():
    m = _v3(rates=(2, 6)).eval()
    h, w = torch.export.Dim("h", min=2, max=64), torch.export.Dim("w", min=2, max=64)
    prog = torch.export.export(m, (torch.randn(2, 8, 9, 9),), dynamic_shapes=({2: h, 3: w},))
    for shape in [(2, 8, 9, 9), (2, 8, 4, 13)]:  # the second one has degenerate rates in eager mode
        x = torch.randn(*shape)
        torch.testing.assert_close(prog.module()(x), m(x), rtol=1e-5, atol=1e-5)
