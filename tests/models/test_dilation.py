import numpy as np
import pytest
import torch
from support.export_check import exported_and_eager
from torch import nn

from zoo.archs import get_arch
from zoo.errors import InputError
from zoo.models.dilation import DilationNet, dilation8, reflect_pad
from zoo.ops.context_module import ContextModule

# The released model, fyu/dilation models/dilation8_pascal_voc_deploy.prototxt: (layer, out, in, kernel,
# dilation). Convolutions are unpadded except ct_conv1_1 (pad 33); every layer has a bias.
PROTOTXT = [
    ("conv1_1", 64, 3, 3, 1), ("conv1_2", 64, 64, 3, 1), ("conv2_1", 128, 64, 3, 1), ("conv2_2", 128, 128, 3, 1),
    ("conv3_1", 256, 128, 3, 1), ("conv3_2", 256, 256, 3, 1), ("conv3_3", 256, 256, 3, 1),
    ("conv4_1", 512, 256, 3, 1), ("conv4_2", 512, 512, 3, 1), ("conv4_3", 512, 512, 3, 1),
    ("conv5_1", 512, 512, 3, 2), ("conv5_2", 512, 512, 3, 2), ("conv5_3", 512, 512, 3, 2),
    ("fc6", 4096, 512, 7, 4), ("fc7", 4096, 4096, 1, 1), ("fc-final", 21, 4096, 1, 1),
    ("ct_conv1_1", 42, 21, 3, 1), ("ct_conv1_2", 42, 42, 3, 1), ("ct_conv2_1", 84, 42, 3, 2),
    ("ct_conv3_1", 168, 84, 3, 4), ("ct_conv4_1", 336, 168, 3, 8), ("ct_conv5_1", 672, 336, 3, 16),
    ("ct_fc1", 672, 672, 3, 1), ("ct_final", 21, 672, 1, 1),
]
ORIGINAL_PARAMS = sum(o * i * k * k + o for _, o, i, k, _ in PROTOTXT)  # 141,149,720


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_meta_layers_match_the_released_prototxt():
    with torch.device("meta"):
        m = dilation8()
    assert ORIGINAL_PARAMS == 141_149_720 and _n_params(m) == ORIGINAL_PARAMS
    ctx_names = dict(zip([p[0] for p in PROTOTXT[16:]], ["ctx_conv1_1", "ctx_conv1_2", "ctx_conv2_1", "ctx_conv3_1",
                                                         "ctx_conv4_1", "ctx_conv5_1", "ctx_fc1", "ctx_final"]))
    for name, out, inp, k, d in PROTOTXT:
        if name.startswith("ct_"):
            conv = getattr(m.context, ctx_names[name])
        else:
            conv = getattr(m, "final" if name == "fc-final" else name)
            assert conv.padding == (0, 0), name  # the front-end is unpadded
        assert conv.weight.shape == (out, inp, k, k) and conv.dilation == (d, d) and conv.bias is not None, name
    assert isinstance(m.context, ContextModule) and m.context.variant == "large"
    assert m.pool.ceil_mode and m.margin == 186 and m.up.factor == 8


@pytest.mark.parametrize("size,expected", [(528, 528), (64, 64), (100, 104), (200, 200)])
def test_output_sizes_on_meta(size, expected):
    with torch.device("meta"):
        m = dilation8().eval()
        if size == 528:  # the released net's 900 x 900 input gives a 66 x 66 map
            assert m.frontend(torch.empty(1, 3, 900, 900)).shape == (1, 21, 66, 66)
        assert m(torch.empty(1, 3, size, size)).shape == (1, 21, expected, expected)


def test_reflect_pad_is_opencv_reflect_101():
    x = torch.arange(20.0).view(1, 1, 4, 5)
    for margin in (0, 2, 3, 9, 186):
        ref = np.pad(x.numpy()[0, 0], margin, mode="reflect")  # numpy 'reflect' == BORDER_REFLECT_101
        assert np.array_equal(reflect_pad(x, margin)[0, 0].numpy(), ref), margin
    with pytest.raises(InputError, match="2 x 2"):
        reflect_pad(torch.zeros(1, 1, 1, 5), 3)


@pytest.fixture(scope="module")
def small_net():
    torch.manual_seed(0)
    return dilation8(num_classes=3).eval()


def test_forward_shapes_train_and_eval(small_net):
    x = torch.randn(1, 3, 64, 64) * 50
    with torch.no_grad():
        out = small_net(x)
        train = small_net.train()(x)
    small_net.eval()
    assert out.shape == train.shape == (1, 3, 64, 64) and torch.isfinite(out).all()


def test_errors_and_registration():
    with torch.device("meta"):
        m = dilation8(margin=0)
        with pytest.raises(InputError, match="380"):
            m(torch.empty(1, 3, 200, 200))
        assert m(torch.empty(1, 3, 380, 388)).shape == (1, 21, 8, 16)
        assert dilation8(context=False).context is None
    with pytest.raises(ValueError, match="margin"):
        DilationNet(margin=-1)
    assert get_arch("dilation8") is dilation8


def test_export_dilation8(small_net):
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(*exported_and_eager(small_net, x), atol=1e-3)
