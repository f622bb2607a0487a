"""Inference transforms and post-processing presets."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zoo.errors import InputError, RegistryError
from zoo.registry import Preset
from zoo.transforms import (SegmentationPostprocess, SegmentationTransforms, build_postprocess, build_transforms,
                            to_float_batch)

CAFFE = dict(mean=[104.008, 116.669, 122.675], std=[1.0, 1.0, 1.0], pixel_range=255.0, channel_order="bgr")


def test_uint8_and_float_inputs_agree_and_single_images_are_batched():
    t = SegmentationTransforms(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    img = torch.randint(0, 256, (2, 3, 7, 9), dtype=torch.uint8)
    torch.testing.assert_close(t(img), t(img.float() / 255))
    assert t(img[0]).shape == (1, 3, 7, 9)


def test_caffe_preset_is_bgr_0_255_minus_mean():
    t = SegmentationTransforms(**CAFFE)
    img = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    img[:, 0] = 255  # pure red
    out = t(img)
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([-104.008, -116.669, 255 - 122.675]))


def test_resize_shorter_side():
    t = SegmentationTransforms(mean=[0, 0, 0], std=[1, 1, 1], resize=20)
    assert t(torch.rand(1, 3, 10, 15)).shape == (1, 3, 20, 30)


@pytest.mark.parametrize("bad", [torch.rand(1, 1, 8, 8), torch.rand(8, 8), torch.zeros(1, 3, 4, 4, dtype=torch.int32)])
def test_bad_inputs_raise_input_error(bad):
    with pytest.raises(InputError):
        SegmentationTransforms(**CAFFE)(bad)


def test_postprocess_upsamples_and_takes_argmax():
    logits = torch.zeros(2, 4, 3, 3)
    logits[:, 2] = 1.0
    labels = SegmentationPostprocess()({"out": logits}, (10, 11))
    assert labels.shape == (2, 10, 11) and labels.dtype == torch.int64 and (labels == 2).all()
    with pytest.raises(InputError):
        SegmentationPostprocess()(torch.zeros(4, 3, 3), (3, 3))


def test_crf_postprocess_reads_the_images_in_0_255_and_needs_them():
    crf = dict(bi_weight=10.0, bi_xy_std=8.0, bi_rgb_std=10.0, bi_radius=3, bi_dilation=2)
    post = build_postprocess(Preset("segmentation-crf", crf), "x")
    images = torch.randint(0, 256, (2, 3, 10, 12), dtype=torch.uint8)
    logits = torch.randn(2, 4, 5, 6)
    labels = post(logits, images.shape[-2:], images)
    assert labels.shape == (2, 10, 12) and labels.dtype == torch.int64
    torch.testing.assert_close(post(logits, (10, 12), images.float() / 255), labels)
    in_255 = build_postprocess(Preset("segmentation-crf", {**crf, "input_range": 255.0}), "x")
    torch.testing.assert_close(in_255({"out": logits}, (10, 12), images.float()), labels)
    assert not torch.equal(labels, SegmentationPostprocess()(logits, (10, 12)))
    with pytest.raises(InputError, match="needs the input images"):
        post(logits, (10, 12))
    with pytest.raises(InputError, match="H x W = size"):
        post(logits, (10, 12), images[..., :11])
    with pytest.raises(InputError, match="uint8"):
        post(logits, (10, 12), images.long())
    with pytest.raises(RegistryError, match="input_range"):
        build_postprocess(Preset("segmentation-crf", {"input_range": 0}), "x")
    with pytest.raises(RegistryError, match="postprocess.args"):
        build_postprocess(Preset("segmentation-crf", {"bi_dilation": 0}), "x")


def test_unknown_preset_or_bad_args_name_the_field():
    with pytest.raises(RegistryError, match="transforms.preset"):
        build_transforms(Preset("nope"), "x")
    with pytest.raises(RegistryError, match="transforms.args"):
        build_transforms(Preset("segmentation", {"mean": [0, 0, 0]}), "x")


def test_transforms_compile_without_graph_breaks():
    t = SegmentationTransforms(**CAFFE, resize=16)
    img = torch.randint(0, 256, (2, 3, 12, 20), dtype=torch.uint8)
    compiled = torch.compile(t, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(img), t(img))


# ------------------------------------------------------------------------------------ float range, min_size
IMAGENET = dict(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])


def test_float_images_in_0_255_raise_with_the_range_and_the_fix():
    img = torch.randint(0, 256, (1, 3, 5, 6), dtype=torch.uint8)
    img[0, 0, 0, 0] = 255
    with pytest.raises(InputError, match=r"values in \[\d+, 255\], outside \[0, 1\]; pass uint8 images, or divide "
                                         r"by 255, or construct the transforms with input_range=255"):
        SegmentationTransforms(**IMAGENET)(img.float())
    for bad in (float("nan"), float("inf"), -0.01, 1.01):
        x = torch.rand(1, 3, 4, 4)
        x[0, 1, 2, 3] = bad
        with pytest.raises(InputError, match="NaN or inf" if abs(bad) > 2 or bad != bad else "outside"):
            to_float_batch(x)
    edge = torch.tensor([-5e-4, 1 + 5e-4]).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    assert to_float_batch(edge) is edge  # rounding within RANGE_TOLERANCE passes unchanged


def test_input_range_255_takes_float_0_255_and_pixel_range_keeps_its_meaning():
    img = torch.randint(0, 256, (2, 3, 7, 9), dtype=torch.uint8)
    t = SegmentationTransforms(**IMAGENET, input_range=255)
    torch.testing.assert_close(t(img.float()), SegmentationTransforms(**IMAGENET)(img))
    torch.testing.assert_close(t(img), SegmentationTransforms(**IMAGENET)(img))
    with pytest.raises(InputError, match=r"outside \[0, 255\]"):
        t(img.float() * 2)
    caffe = SegmentationTransforms(**CAFFE)  # pixel_range=255 is the network's scale: float input stays [0, 1]
    torch.testing.assert_close(caffe(img.float() / 255), caffe(img))
    with pytest.raises(InputError, match="input_range=255"):
        caffe(img.float())


def test_min_size_names_the_size_and_the_minimum():
    t = SegmentationTransforms(**IMAGENET, min_size=8)
    with pytest.raises(InputError, match=r"1 x 1 \(H x W\) pixels, smaller than the minimum 8 x 8"):
        t(torch.zeros(1, 3, 1, 1, dtype=torch.uint8))
    with pytest.raises(InputError, match=r"7 x 20 .* minimum 8 x 8"):
        t(torch.zeros(3, 7, 20))
    assert t(torch.zeros(1, 3, 8, 8)).shape == (1, 3, 8, 8)
    assert SegmentationTransforms(**IMAGENET)(torch.zeros(1, 3, 1, 1)).shape == (1, 3, 1, 1)  # default: no minimum
    with pytest.raises(InputError, match="empty"):
        SegmentationTransforms(**IMAGENET, resize=8)(torch.zeros(1, 3, 0, 5))


@pytest.mark.parametrize("args", [{"min_size": 0}, {"min_size": 2.5}, {"min_size": True}, {"input_range": 0},
                                  {"input_range": "255"}, {"input_range": float("inf")}])
def test_bad_min_size_or_input_range_name_the_field(args):
    with pytest.raises(RegistryError, match=f"transforms.args.*{next(iter(args))}"):
        build_transforms(Preset("segmentation", {**IMAGENET, **args}), "x")


def test_range_check_is_skipped_when_compiled_or_exported():
    """The value check is eager-only: compiled and exported graphs have no data-dependent branch."""
    t = SegmentationTransforms(**CAFFE, resize=16, min_size=4)
    img = torch.rand(2, 3, 12, 20)
    compiled = torch.compile(t, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(img), t(img))
    compiled(img * 255)  # not checked under compile, by design (documented in to_float_batch)
    exported = torch.export.export(t, (img,))
    torch.testing.assert_close(exported.module()(img), t(img))
    with pytest.raises(InputError, match="minimum 4 x 4"):
        t(torch.rand(2, 3, 3, 20))


def test_meta_tensors_pass_without_reading_values():
    out = SegmentationTransforms(**IMAGENET, min_size=2)(torch.empty(1, 3, 4, 4, device="meta"))
    assert out.shape == (1, 3, 4, 4) and out.is_meta


DTYPES = [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool, torch.complex64]
FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
SIDE = st.integers(1, 6)
SHAPES = st.one_of(st.tuples(st.integers(0, 3), st.just(3), SIDE, SIDE), st.tuples(st.just(3), SIDE, SIDE),
                   st.lists(st.integers(0, 5), min_size=0, max_size=5).map(tuple))


def _valid(x: torch.Tensor, input_range: float, min_size: int | None) -> bool:
    """What to_float_batch must accept: (B,) 3 x H x W, H and W >= max(1, min_size), uint8, or float with
    values in [0, input_range] up to RANGE_TOLERANCE."""
    if x.dim() not in (3, 4) or x.shape[-3] != 3 or min(x.shape[-2:]) < max(1, min_size or 1):
        return False
    if x.dtype == torch.uint8 or (x.is_floating_point() and x.numel() == 0):
        return True
    tol = 1e-3 * input_range
    return x.is_floating_point() and bool(((x.double() >= -tol) & (x.double() <= input_range + tol)).all())


@settings(max_examples=300, deadline=None, database=None)
@given(dtype=st.one_of(st.sampled_from(FLOATS), st.sampled_from(DTYPES)), shape=SHAPES,
       scale=st.sampled_from([1.0, 1.0, 0.5, 1.0005, 1.002, 255.0, -1.0]),
       special=st.sampled_from([None, None, None, None, "nan", "inf"]), input_range=st.sampled_from([1.0, 255.0]),
       min_size=st.sampled_from([None, None, 1, 3]), seed=st.integers(0, 2**16))
def test_any_tensor_gives_input_error_or_the_right_result(dtype, shape, scale, special, input_range, min_size, seed):
    """Random dtypes, shapes and value ranges: InputError exactly for invalid input, else x / 255 (uint8) or
    x / input_range (float), through to_float_batch and the segmentation preset."""
    x = torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale * input_range
    if special is not None and x.numel():
        x.view(-1)[0] = float(special)
    x = (x * 255).round().clamp(0, 255).to(dtype) if dtype == torch.uint8 else x.to(dtype)
    t = SegmentationTransforms(mean=[0, 0, 0], std=[1, 1, 1], input_range=input_range, min_size=min_size)
    try:
        out, direct = t(x), to_float_batch(x, input_range=input_range, min_size=min_size)
    except InputError:
        assert not _valid(x, input_range, min_size)
        return
    assert _valid(x, input_range, min_size)
    batched = x if x.dim() == 4 else x.unsqueeze(0)
    expected = batched.float() / 255 if dtype == torch.uint8 else batched / input_range
    assert out.shape == batched.shape and out.dtype == expected.dtype
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close(direct, out, rtol=0, atol=0)
