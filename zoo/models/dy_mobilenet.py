"""DY-MobileNetV2: MobileNetV2 with Dynamic Convolution.

Paper: Chen et al., "Dynamic Convolution: Attention over Convolution Kernels", CVPR 2020
(https://arxiv.org/abs/1912.03458), on MobileNetV2 (Sandler et al., CVPR 2018,
https://arxiv.org/abs/1801.04381). No official code or weights.

MobileNetV2 x``width_mult`` in torchvision's layout and key names: ``features.0`` stem 3x3/2 conv + BN +
ReLU6 (static: Dynamic Convolution keeps the first layer static); ``features.1..17`` inverted residual
blocks ``(t, c, n, s)`` = (1,16,1,1), (6,24,2,2), (6,32,3,2), (6,64,4,2), (6,96,3,1), (6,160,3,2),
(6,320,1,1) with ``conv`` = [1x1 expansion + BN + ReLU6 (absent for t = 1), 3x3 depthwise + BN + ReLU6,
1x1 linear projection, BN] and a residual when stride 1 and in == out; ``features.18`` 1x1 conv to 1280
+ BN + ReLU6; global average pooling; ``classifier`` = Dropout(0.2), Linear.

Dynamic parts: the expansion, depthwise and projection convs of every block are
:class:`zoo.ops.dy_conv.DyConv2d` with K = 4 kernels (bias, attention FC1 reduction 4 with at least 4
hidden units, softmax with temperature tau; anneal tau 30 -> 1 with
``zoo.ops.dy_conv.set_temperature(model, temperature_schedule(epoch))``). Each dynamic conv has its own
attention branch computed on that conv's input. Interpretation choice: the last 1x1 conv
(``features.18``) is static by default, as in the brief's reading "dynamic convs in the blocks";
``dynamic_head=True`` makes it dynamic too (then every conv except the first is dynamic).
Input (B, 3, H, W) -> logits (B, num_classes).
"""
from __future__ import annotations

from torch import Tensor, nn

from zoo.archs import register_arch
from zoo.ops._checks import check_shape
from zoo.ops.dy_conv import DyConv2d

__all__ = ["DyMobileNetV2", "DyInvertedResidual", "dy_mobilenetv2"]

_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _make_divisible(v: float, divisor: int = 8) -> int:
    """MobileNet channel rounding: nearest multiple of ``divisor``, never below 90% of ``v``."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _conv_bn_relu6(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1, *,
                   dynamic: bool, num_kernels: int) -> nn.Sequential:
    pad = (kernel - 1) // 2
    if dynamic:
        conv = DyConv2d(in_ch, out_ch, kernel, stride, pad, groups=groups, num_kernels=num_kernels)
    else:
        conv = nn.Conv2d(in_ch, out_ch, kernel, stride, pad, groups=groups, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out_ch), nn.ReLU6(inplace=True))


class DyInvertedResidual(nn.Module):
    """MobileNetV2 block with dynamic expansion / depthwise / projection convs (torchvision keys ``conv.*``)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int, num_kernels: int = 4) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = int(round(in_ch * expand_ratio))
        self.use_res_connect = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu6(in_ch, hidden, 1, dynamic=True, num_kernels=num_kernels))
        layers += [
            _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden, dynamic=True, num_kernels=num_kernels),
            DyConv2d(hidden, out_ch, 1, num_kernels=num_kernels),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class DyMobileNetV2(nn.Module):
    """DY-MobileNetV2 (see module docstring). Input (B, 3, H, W) -> (B, num_classes)."""

    def __init__(self, *, width_mult: float = 1.0, num_kernels: int = 4, num_classes: int = 1000,
                 dropout: float = 0.2, dynamic_head: bool = False) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        if num_kernels < 1:
            raise ValueError(f"num_kernels must be >= 1, got {num_kernels}")
        in_ch = _make_divisible(32 * width_mult)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [_conv_bn_relu6(3, in_ch, 3, 2, dynamic=False, num_kernels=num_kernels)]
        for t, c, n, s in _SETTINGS:
            out = _make_divisible(c * width_mult)
            for i in range(n):
                features.append(DyInvertedResidual(in_ch, out, s if i == 0 else 1, t, num_kernels))
                in_ch = out
        features.append(_conv_bn_relu6(in_ch, self.last_channel, 1, dynamic=dynamic_head, num_kernels=num_kernels))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes))
        for m in self.modules():  # torchvision's MobileNetV2 init for the static layers
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear) and m is self.classifier[1]:
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        check_shape(x, "B,C,H,W", "x", C=3)
        return self.classifier(self.features(x).mean((2, 3)))


@register_arch("dy_mobilenetv2")
def dy_mobilenetv2(*, width_mult: float = 1.0, num_kernels: int = 4, num_classes: int = 1000,
                   dropout: float = 0.2, dynamic_head: bool = False) -> DyMobileNetV2:
    """DY-MobileNetV2 x``width_mult`` with ``num_kernels`` kernels per dynamic conv, random init."""
    return DyMobileNetV2(width_mult=width_mult, num_kernels=num_kernels, num_classes=num_classes,
                         dropout=dropout, dynamic_head=dynamic_head)
