"""zoo.layers.norm: normalisation layers by name."""
import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from zoo.layers import make_norm


def test_names_and_callables():
    assert make_norm("bn") is nn.BatchNorm2d
    assert make_norm("frozen_bn") is FrozenBatchNorm2d
    group = lambda c: nn.GroupNorm(2, c)  # noqa: E731
    assert make_norm(group) is group
    assert isinstance(make_norm("frozen_bn")(8), FrozenBatchNorm2d)


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match="'bn', 'frozen_bn' or a callable"):
        make_norm("instance")


def test_frozen_bn_has_no_parameters_to_train():
    layer = make_norm("frozen_bn")(4)
    assert not list(layer.parameters()) and layer(torch.ones(1, 4, 2, 2)).shape == (1, 4, 2, 2)
