"""Inference transforms and post-processing presets."""
from __future__ import annotations

import pytest
import torch

from zoo.errors import InputError, RegistryError
from zoo.registry import Preset
from zoo.transforms import SegmentationPostprocess, SegmentationTransforms, build_transforms

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
