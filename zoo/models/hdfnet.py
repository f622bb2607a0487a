"""HDFNet: Hierarchical Dynamic Filtering Network for RGB-D salient object detection.

Paper: Pang, Zhang, Zhao, Lu, "Hierarchical Dynamic Filtering Network for RGB-D Salient Object
Detection", ECCV 2020, https://arxiv.org/abs/2007.06227. Reference code: lartpang/HDFNet
(``network/HDFNet.py``, ``module/MyModules.py``, ``backbone/VGG.py``, ``backbone/ResNet.py``).

Architecture (as the reference code):

- two encoders of the same kind, one on the RGB image and one on the depth map, whose first conv takes
  1 channel: VGG16-BN or VGG19-BN cut into five stages at strides 1, 2, 4, 8, 16 (the last max-pool of
  VGG is not used), or ResNet-50 cut into stem (stride 2), layer1 (with the stem max-pool, 4),
  layer2 (8), layer3 (16), layer4 (32);
- ``trans*``: 1x1 convs of the five RGB stages to 64 channels (32 for VGG's stride-1 stage);
- ``depth_trans*`` (DenseTransLayer): at the three deepest levels, ``BasicConv2d(rgb + depth)``, a
  DenseLayer with ``down_factor = C // 64`` added back, then BasicConv2d to the 64-channel guidance;
- decoder, top-down from the deepest level: ``upconv`` (BasicConv2d 3x3), a DDPM block
  (:class:`zoo.ops.depth_dc.DDPM`, dynamic dilated pyramid with per-pixel kernels generated from the
  guidance of that level), bilinear upsampling (``align_corners=False``) to the next level and sum with
  its ``trans`` features; at the two shallowest levels no DDPM; ResNet's last step upsamples x2 with
  ``align_corners=True`` (reference ``cus_sample``) to the input resolution;
- ``classifier``: 1x1 conv 32 -> 1.

Input: ``forward(rgb, depth)`` takes TWO tensors, rgb (B, 3, H, W) ImageNet-normalised and depth
(B, 1, H, W) in [0, 1] of the same size (the ``rgbd-saliency`` transforms give both; 320 x 320 in the
paper). H and W should be multiples of 16 (VGG) or 32 (ResNet) so that the levels align; other sizes
work (bilinear alignment) but differ from the paper. Output: saliency LOGITS (B, 1, H, W); the
reference returns ``sigmoid`` of them, here the ``rgbd-saliency`` postprocess applies the sigmoid
(and a loss can use ``binary_cross_entropy_with_logits``).

State-dict layout: encoders are ``rgb_encoder`` / ``depth_encoder`` in torchvision's layout
(``features.<i>`` of ``vgg16_bn``/``vgg19_bn``; ``conv1``, ``bn1``, ``layer1..4`` of ResNet-50), so
torchvision ImageNet weights load into them directly (except the 1-channel depth conv1); every other
module keeps the reference name (``trans16``, ``depth_trans16``, ``upconv16``, ``selfdc_16``,
``classifier``, ...). ``zoo.converters.hdfnet`` maps the authors' checkpoints (``encoder1..16``,
``depth_encoder*``, and DepthDC's ``gernerate_kernel`` spelling) to this layout.
Initialisation: VGG and ResNet as torchvision (Kaiming normal fan_out, BN 1/0); the rest PyTorch
defaults, as the reference.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from zoo.archs import register_arch
from zoo.layers import ResNet, resnet
from zoo.ops._checks import check_shape
from zoo.ops.depth_dc import DDPM, BasicConv2d, DenseLayer

__all__ = ["HDFNet", "DenseTransLayer", "VGGEncoder", "hdfnet"]

# torchvision VGG configurations "D" (16) and "E" (19), and the five HDFNet stage ends in
# ``features`` indices (the reference slices [0:6], [6:13], [13:23], [23:33], [33:43] for VGG16).
_VGG_CFGS = {
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512),
}
_VGG_STAGE_ENDS = {16: (6, 13, 23, 33, 43), 19: (6, 13, 26, 39, 52)}


class VGGEncoder(nn.Module):
    """VGG-BN ``features`` (torchvision indices, without the final max-pool) returning the five HDFNet
    stages at strides 1, 2, 4, 8, 16 with 64, 128, 256, 512, 512 channels. x (B, in_channels, H, W)."""

    def __init__(self, depth: int = 16, in_channels: int = 3) -> None:
        super().__init__()
        if depth not in _VGG_CFGS:
            raise ValueError(f"VGG depth must be 16 or 19, got {depth}")
        layers: list[nn.Module] = []
        c = in_channels
        for v in _VGG_CFGS[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(c, v, kernel_size=3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.in_channels = in_channels
        self.stage_ends = _VGG_STAGE_ENDS[depth]
        self.feature_channels = (64, 128, 256, 512, 512)
        for m in self.modules():  # torchvision VGG init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        start = 0
        for end in self.stage_ends:
            for i in range(start, end):
                x = self.features[i](x)
            feats.append(x)
            start = end
        return feats


def _resnet_encoder(in_channels: int) -> ResNet:
    net = resnet(depth=50, features_only=True, out_indices=(0, 1, 2, 3, 4))
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    return net


def _resnet_stages(net: ResNet, x: Tensor) -> list[Tensor]:
    # ResNet.forward checks for 3 input channels; the depth encoder has 1, so run the stages here.
    x = net.stem(x)
    feats = [x]
    for i, layer in enumerate((net.layer1, net.layer2, net.layer3, net.layer4)):
        x = layer(net.maxpool(x) if i == 0 else x)
        feats.append(x)
    return feats


class DenseTransLayer(nn.Module):
    """HDFNet DenseTransLayer: rgb, depth (B, in_C, H, W) -> guidance (B, out_C, H, W).

    ``feat = BasicConv2d3x3(rgb + depth)``; ``out = BasicConv2d3x3(DenseLayer(feat) + feat)`` with the
    DenseLayer's ``down_factor = in_C // out_C`` (and its default k = 4 blocks)."""

    def __init__(self, in_C: int, out_C: int) -> None:
        super().__init__()
        self.in_C = in_C
        self.fuse_down_mul = BasicConv2d(in_C, in_C, 3, 1, 1)
        self.res_main = DenseLayer(in_C, in_C, down_factor=in_C // out_C)
        self.fuse_main = BasicConv2d(in_C, out_C, 3, 1, 1)

    def forward(self, rgb: Tensor, depth: Tensor) -> Tensor:
        s = check_shape(rgb, "B,C,H,W", "rgb", C=self.in_C)
        check_shape(depth, "B,C,H,W", "depth", **s)
        feat = self.fuse_down_mul(rgb + depth)
        return self.fuse_main(self.res_main(feat) + feat)


def _upsample_add(x: Tensor, y: Tensor) -> Tensor:
    """Reference ``upsample_add``: y + bilinear(x -> y's size, align_corners=False)."""
    return y + F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=False)


class HDFNet(nn.Module):
    """HDFNet on a VGG16-BN, VGG19-BN or ResNet-50 encoder pair (see the module docstring).

    ``forward(rgb (B, 3, H, W), depth (B, 1, H, W)) -> logits (B, 1, H, W)``.
    """

    def __init__(self, backbone: str = "vgg16") -> None:
        super().__init__()
        if backbone not in ("vgg16", "vgg19", "resnet50"):
            raise ValueError(f"backbone must be 'vgg16', 'vgg19' or 'resnet50', got {backbone!r}")
        self.backbone = backbone
        if backbone == "resnet50":
            self.rgb_encoder = _resnet_encoder(3)
            self.depth_encoder = _resnet_encoder(1)
            # levels = output strides of the five stages; trans channels per level
            self.levels = (2, 4, 8, 16, 32)
            channels = (64, 256, 512, 1024, 2048)
            trans_out = (64, 64, 64, 64, 64)
        else:
            depth = int(backbone[3:])
            self.rgb_encoder = VGGEncoder(depth, 3)
            self.depth_encoder = VGGEncoder(depth, 1)
            self.levels = (1, 2, 4, 8, 16)
            channels = (64, 128, 256, 512, 512)
            trans_out = (32, 64, 64, 64, 64)
        for lv, c, o in zip(self.levels, channels, trans_out):
            setattr(self, f"trans{lv}", nn.Conv2d(c, o, 1))
        self.dyn_levels = self.levels[2:]  # the three deepest levels get guidance + DDPM
        for lv, c in zip(self.dyn_levels, channels[2:]):
            setattr(self, f"depth_trans{lv}", DenseTransLayer(c, 64))
        # upconv at every level, top-down: 64 -> 64 except the last two (64 -> 32, 32 -> 32)
        up_levels = self.levels[::-1] + ((1,) if backbone == "resnet50" else ())
        up_levels = tuple(dict.fromkeys(up_levels))
        self.up_levels = up_levels
        for lv in up_levels:
            cin = 32 if lv == 1 else 64
            cout = 32 if lv in (1, 2) else 64
            setattr(self, f"upconv{lv}", BasicConv2d(cin, cout, 3, 1, 1))
        for lv in self.dyn_levels:
            setattr(self, f"selfdc_{lv}", DDPM(64, 64, 64, 3, 4))
        self.classifier = nn.Conv2d(32, 1, 1)

    def _encode(self, encoder: nn.Module, x: Tensor) -> list[Tensor]:
        return _resnet_stages(encoder, x) if self.backbone == "resnet50" else encoder(x)

    def forward(self, rgb: Tensor, depth: Tensor) -> Tensor:
        s = check_shape(rgb, "B,C,H,W", "rgb", C=3)
        check_shape(depth, "B,C,H,W", "depth", B=s["B"], C=1, H=s["H"], W=s["W"])
        rgb_feats = self._encode(self.rgb_encoder, rgb)
        depth_feats = self._encode(self.depth_encoder, depth)
        aux = {lv: getattr(self, f"depth_trans{lv}")(rgb_feats[i + 2], depth_feats[i + 2])
               for i, lv in enumerate(self.dyn_levels)}
        trans = [getattr(self, f"trans{lv}")(f) for lv, f in zip(self.levels, rgb_feats)]

        out = trans[-1]
        for i in range(len(self.levels) - 1, 0, -1):  # deepest level -> second shallowest
            lv = self.levels[i]
            out = getattr(self, f"upconv{lv}")(out)
            if lv in aux:
                out = getattr(self, f"selfdc_{lv}")(out, aux[lv])
            out = _upsample_add(out, trans[i - 1])
        out = getattr(self, f"upconv{self.levels[0]}")(out)
        if self.backbone == "resnet50":  # stride 2 -> 1 (reference cus_sample, align_corners=True)
            out = F.interpolate(out, scale_factor=2.0, mode="bilinear", align_corners=True)
            out = self.upconv1(out)
        return self.classifier(out)


@register_arch("hdfnet")
def hdfnet(*, backbone: str = "vgg16") -> HDFNet:
    """HDFNet with random init on ``backbone`` 'vgg16' (VGG16-BN), 'vgg19' (VGG19-BN) or 'resnet50'."""
    return HDFNet(backbone)
