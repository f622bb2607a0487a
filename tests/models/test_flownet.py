"""FlowNetS / FlowNetC (zoo.models.flownet): shapes, LS-DFN variants, ptlflow interface, errors, export."""
from __future__ import annotations

import time

import pytest
import torch
from support.export_check import exported_and_eager

from zoo.archs import get_arch
from zoo.errors import InputError
from zoo.models.flownet import FlowNet, flownetc, flownets

LSDFN = {"out_channels": 24, "samples_per_side": 9, "sample_stride": 2, "kernel_size": 3}
SMALL_LSDFN = {"out_channels": 4, "samples_per_side": 3, "sample_stride": 2, "kernel_size": 3}


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------- build
def test_registered_archs():
    assert get_arch("flownets") is flownets and get_arch("flownetc") is flownetc


@pytest.mark.parametrize("fn,expected", [(flownets, 38_675_536), (flownetc, 39_174_320)])
def test_full_size_builds_on_meta_with_reference_parameter_count(fn, expected):
    # FlowNetPytorch layout (no deconv / predict / up-sampling biases). flownet2-pytorch's FlowNetC
    # docstring counts 39,175,298 = ours + 960 deconv + 10 predict + 8 up-sampling biases.
    with torch.device("meta"):
        model = fn()
        with_biases = fn(deconv_bias=True, predict_bias=True, upsample_bias=True)
    assert _params(model) == expected
    assert _params(with_biases) == expected + 960 + 10 + 8
    assert next(model.parameters()).device.type == "meta"


def test_key_names_follow_flownetpytorch():
    with torch.device("meta"):
        keys = set(flownetc().state_dict())
        keys_bn = set(flownets(batch_norm=True).state_dict())
    for key in ("conv1.0.weight", "conv1.0.bias", "conv_redir.0.weight", "conv3_1.0.weight",
                "deconv5.0.weight", "predict_flow6.weight", "upsampled_flow6_to_5.weight"):
        assert key in keys
    assert "deconv5.0.bias" not in keys and "predict_flow2.bias" not in keys
    assert "conv1.0.bias" not in keys_bn and "conv1.1.running_mean" in keys_bn


@pytest.mark.parametrize("fn", [flownets, flownetc])
def test_lsdfn_variant_builds_on_meta(fn):
    with torch.device("meta"):
        plain, dyn = fn(), fn(lsdfn=LSDFN)
    # conv4 and the level-3 refinement (predict_flow3, deconv2) see C' = 24 more input channels
    assert dyn.conv4[0].in_channels == plain.conv4[0].in_channels + 24
    assert dyn.predict_flow3.in_channels == plain.predict_flow3.in_channels + 24
    assert dyn.deconv2[0].in_channels == plain.deconv2[0].in_channels + 24
    assert dyn.lsdfn.in_channels == 256 and dyn.lsdfn.samples_per_side == 9


def test_correlation_grid_is_an_argument():
    with torch.device("meta"):
        paper = flownetc(width=0.25)
        fine = flownetc(width=0.25, corr_max_displacement=10, corr_stride=1)
        short = flownetc(width=0.25, corr_max_displacement=8, corr_stride=1)
    assert (paper.corr.max_displacement, paper.corr.stride) == (20, 2)
    assert (fine.corr.max_displacement, fine.corr.stride) == (10, 1)
    redirect = paper.conv_redir[0].out_channels
    assert paper.conv3_1[0].in_channels == fine.conv3_1[0].in_channels == redirect + 21 * 21
    assert short.conv3_1[0].in_channels == redirect + 17 * 17


def test_bad_arguments():
    with pytest.raises(ValueError, match="width"):
        flownets(width=0)
    with pytest.raises(ValueError, match="in_channels"):
        flownets(lsdfn={"in_channels": 3, "out_channels": 4})


# --------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("fn", [flownets, flownetc])
@pytest.mark.parametrize("size", [(64, 128), (128, 192)])
def test_forward_shapes_train_and_eval(fn, size):
    torch.manual_seed(0)
    h, w = size
    model = fn(width=0.25)
    b = 2 if h == 64 else 1
    x = torch.randn(b, 6, h, w)
    model.train()
    flows = model(x)
    assert isinstance(flows, tuple) and len(flows) == 5
    for i, f in enumerate(flows):  # flow2 .. flow6 at 1/4 .. 1/64
        assert f.shape == (b, 2, h // 2 ** (i + 2), w // 2 ** (i + 2))
    model.eval()
    with torch.no_grad():
        out = model(x)
        flow2 = model.multiscale(x)[0]
    assert out.shape == (b, 2, h, w) and torch.isfinite(out).all()
    expected = 20 * torch.nn.functional.interpolate(flow2, scale_factor=4, mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("fn", [flownets, flownetc])
def test_lsdfn_forward_and_backward(fn):
    torch.manual_seed(0)
    model = fn(width=0.25, lsdfn=SMALL_LSDFN).train()
    x = torch.randn(1, 6, 64, 128)
    flows = model(x)
    assert [f.shape[-2:] for f in flows] == [(16, 32), (8, 16), (4, 8), (2, 4), (1, 2)]
    sum(f.square().mean() for f in flows).backward()
    # LS-DFN starts as its residual (V = attentions = 0): V and the feature branch get gradients.
    assert model.lsdfn.kernel_v.weight.grad.abs().sum() > 0
    assert model.lsdfn.feature.weight.grad.abs().sum() > 0
    assert model.conv1[0].weight.grad.abs().sum() > 0


def test_lsdfn_output_reaches_the_flow():
    # The LS-DFN output feeds conv4 and the level-3 skip: perturbing it must change flow2.
    torch.manual_seed(0)
    model = flownets(width=0.25, lsdfn=SMALL_LSDFN).eval()
    x = torch.randn(1, 6, 64, 64)
    with torch.no_grad():
        before = model(x)
        model.lsdfn.feature.bias.add_(1.0)
        after = model(x)
    assert not torch.allclose(before, after)


def test_flownetc_is_a_function_of_both_frames_and_swapping_changes_it():
    torch.manual_seed(0)
    model = flownetc(width=0.25).eval()
    a, b = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ab = model(torch.cat([a, b], 1))
        ba = model(torch.cat([b, a], 1))
    assert not torch.allclose(ab, ba)


# --------------------------------------------------------------------------------------- ptlflow
@pytest.mark.parametrize("fn", [flownets, flownetc])
def test_ptlflow_dict_interface(fn):
    torch.manual_seed(0)
    model = fn(width=0.25).eval()
    images = torch.rand(2, 2, 3, 50, 70)  # not multiples of 64: resized inside as ptlflow does
    with torch.no_grad():
        out = model({"images": images})
    assert set(out) == {"flows"} and out["flows"].shape == (2, 1, 2, 50, 70)
    model.train()
    out = model({"images": images})
    assert out["flows"].shape == (2, 1, 2, 50, 70) and len(out["flow_preds"]) == 5


def test_ptlflow_preprocessing_is_bgr_per_frame_mean():
    # At a multiple of 64 the dict path equals the tensor path on RGB frames minus per-frame means.
    torch.manual_seed(0)
    model = flownets(width=0.25).eval()
    bgr = torch.rand(1, 2, 3, 64, 128)
    rgb = bgr.flip(2)
    x = (rgb - rgb.mean(dim=(3, 4), keepdim=True)).reshape(1, 6, 64, 128)
    with torch.no_grad():
        torch.testing.assert_close(model({"images": bgr})["flows"][:, 0], model(x))


# --------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("shape", [(1, 6, 60, 128), (1, 6, 64, 100), (1, 3, 64, 64), (6, 64, 64)])
def test_bad_input_raises_input_error(shape):
    model = flownets(width=0.25).eval()
    with pytest.raises(InputError):
        model(torch.randn(*shape))


def test_bad_dict_and_dtype():
    model = flownetc(width=0.25).eval()
    with pytest.raises(InputError, match="images"):
        model({"frames": torch.rand(1, 2, 3, 64, 64)})
    with pytest.raises(InputError):
        model({"images": torch.rand(1, 3, 3, 64, 64)})
    with pytest.raises(InputError, match="floating"):
        model(torch.zeros(1, 6, 64, 64, dtype=torch.uint8))


# --------------------------------------------------------------------------------------- export
@pytest.mark.parametrize("fn,lsdfn", [(flownets, None), (flownetc, None),
                                      pytest.param(flownets, SMALL_LSDFN, marks=pytest.mark.slow),
                                      pytest.param(flownetc, SMALL_LSDFN, marks=pytest.mark.slow)])
def test_torch_export(fn, lsdfn):
    torch.manual_seed(0)
    model = fn(width=0.25, lsdfn=lsdfn).eval()
    x = torch.randn(1, 6, 64, 128)
    start = time.perf_counter()
    torch.testing.assert_close(*exported_and_eager(model, x))
    assert time.perf_counter() - start < 60
