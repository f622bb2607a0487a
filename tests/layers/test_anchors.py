"""zoo.layers.anchors: an anchor generator that works after a meta-device build."""
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList

from zoo.layers import DeviceAnchorGenerator

SIZES, RATIOS = ((32,), (64,)), ((0.5, 1.0, 2.0),) * 2


def _anchors(generator, dtype=torch.float32):
    images = ImageList(torch.zeros(1, 3, 64, 64, dtype=dtype), [(64, 64)])
    features = [torch.zeros(1, 4, 16, 16, dtype=dtype), torch.zeros(1, 4, 8, 8, dtype=dtype)]
    return generator(images, features)


def test_same_anchors_as_torchvision():
    torch.testing.assert_close(_anchors(DeviceAnchorGenerator(SIZES, RATIOS)), _anchors(AnchorGenerator(SIZES, RATIOS)))


def test_built_on_meta_then_used_on_cpu():
    with torch.device("meta"):
        generator = DeviceAnchorGenerator(SIZES, RATIOS)
    anchors = _anchors(generator)
    assert anchors[0].device.type == "cpu" and anchors[0].shape == (3 * (16 * 16 + 8 * 8), 4)
    torch.testing.assert_close(anchors, _anchors(AnchorGenerator(SIZES, RATIOS)))


def test_anchors_follow_the_input_dtype():
    assert _anchors(DeviceAnchorGenerator(SIZES, RATIOS), torch.float64)[0].dtype == torch.float64
