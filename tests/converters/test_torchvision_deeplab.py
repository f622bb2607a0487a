import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.segmentation import deeplabv3_resnet50, deeplabv3_resnet101

from zoo.converters.torchvision_deeplab import convert
from zoo.errors import StateDictMismatchError
from zoo.models.deeplab import deeplabv3


def _randomise_bn(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)


def test_resnet50_outputs_equal():
    torch.manual_seed(0)
    tv = deeplabv3_resnet50(weights=None, weights_backbone=None, aux_loss=True, num_classes=21)
    _randomise_bn(tv)
    tv.eval()
    ours = deeplabv3(backbone="resnet50", num_classes=21, output_stride=8, aux=True).eval()
    ours.load_state_dict(convert(tv.state_dict()), strict=True)
    x = torch.randn(1, 3, 65, 97)
    with torch.no_grad():
        expected = tv(x)
        out = ours(x)
        aux = ours.aux_classifier(ours.backbone(x)[0])
    assert out.shape == (1, 21, 9, 13)
    up = lambda y: F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)  # noqa: E731
    scale = expected["out"].abs().max()
    assert scale > 0.1  # not a trivially zero comparison
    # only the summation order differs (zoo's ASPP folds the pooled branch into the projection)
    torch.testing.assert_close(up(out), expected["out"], rtol=1e-4, atol=1e-5 * scale)
    torch.testing.assert_close(up(aux), expected["aux"], rtol=1e-4, atol=1e-5 * expected["aux"].abs().max())


def test_resnet101_keys_load_strictly():
    with torch.device("meta"):
        tv = deeplabv3_resnet101(weights=None, weights_backbone=None, aux_loss=True, num_classes=21)
        ours = deeplabv3(backbone="resnet101")
    ours.load_state_dict(convert(tv.state_dict()), strict=True, assign=True)


def test_checkpoint_wrappers_and_aux_drop():
    with torch.device("meta"):
        tv = deeplabv3_resnet50(weights=None, weights_backbone=None, aux_loss=True, num_classes=21)
        no_aux = deeplabv3(backbone="resnet50", aux=False)
    sd = tv.state_dict()
    wrapped = {"model": {"module." + k: v for k, v in sd.items()}, "epoch": 3}
    assert convert(wrapped).keys() == sd.keys()
    converted = convert(sd, aux=False)
    assert not any(k.startswith("aux_classifier.") for k in converted)
    no_aux.load_state_dict(converted, strict=True, assign=True)
    with pytest.raises(StateDictMismatchError, match="aux=False"):
        convert(converted)


def test_rejects_other_layouts():
    with torch.device("meta"):
        sd = deeplabv3_resnet50(weights=None, weights_backbone=None, aux_loss=True, num_classes=21).state_dict()
    with pytest.raises(StateDictMismatchError, match="fc.weight"):
        convert({**sd, "fc.weight": torch.zeros(1)})
    with pytest.raises(StateDictMismatchError, match="missing"):
        convert({k: v for k, v in sd.items() if not k.startswith("classifier.0.project")})
