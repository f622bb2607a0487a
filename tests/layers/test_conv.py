"""zoo.layers.conv: mmcv's ConvModule (conv without bias, norm, ReLU)."""
import torch
from torch import nn

from zoo.layers import ConvModule, make_norm


def test_keys_and_shape():
    m = ConvModule(3, 8, 3, padding=1)
    assert sorted(k for k in m.state_dict() if not k.endswith("num_batches_tracked")) == [
        "bn.bias", "bn.running_mean", "bn.running_var", "bn.weight", "conv.weight"]
    assert m(torch.randn(2, 3, 5, 7)).shape == (2, 8, 5, 7)


def test_mmcv_init_and_output_is_relu():
    m = ConvModule(4, 6, 1).eval()
    assert torch.equal(m.bn.weight, torch.ones(6)) and torch.equal(m.bn.bias, torch.zeros(6))
    with torch.no_grad():
        assert float(m(torch.randn(1, 4, 3, 3)).min()) >= 0


def test_other_norms_and_meta():
    assert isinstance(ConvModule(2, 2, norm_layer=make_norm("frozen_bn")).bn, nn.Module)
    with torch.device("meta"):
        assert ConvModule(2, 4, 3, padding=1)(torch.empty(1, 2, 4, 4)).shape == (1, 4, 4, 4)
