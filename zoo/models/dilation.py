"""Dilation8 (VGG-16 front-end + context module) of Yu & Koltun, ICLR 2016, for PASCAL VOC.

Paper: "Multi-Scale Context Aggregation by Dilated Convolutions", https://arxiv.org/abs/1511.07122.
Reference (read, not copied): fyu/dilation ``models/dilation8_pascal_voc_deploy.prototxt`` (the
released model), ``network.py`` (``build_frontend_vgg``, ``build_context``, ``make_upsample``),
``predict.py`` and ``datasets/pascal_voc.json``.

Architecture (Caffe layer names kept as module names):
- front-end: VGG-16 ``conv1_1 .. conv5_3`` (3x3, ReLU) with pool1-pool3 (2x2/2 max, ceil mode as
  Caffe), pool4 and pool5 removed, conv5_x dilated 2, ``fc6`` a 7x7 conv dilated 4 (4096), ``fc7``
  1x1 (4096), both followed by ReLU and Dropout(0.5) in training, ``final`` 1x1 -> K (Caffe
  ``fc-final``). All front-end convs are UNPADDED, as the Caffe model: the input is reflect-padded by
  ``margin`` = 186 pixels (``predict.py``: ``BORDER_REFLECT_101``), which makes the front-end output
  exactly H/8 x W/8 for H, W multiples of 8 (a 528 x 528 image is the released 900 x 900 input ->
  66 x 66). Interpretation choice: the padding is done inside ``forward`` (so the model maps an
  image to a same-size map), repeated reflection when the margin exceeds the image, as OpenCV does;
  ``margin=0`` expects an already padded input.
- context: the LARGE context module on the K class maps (:class:`zoo.ops.ContextModule`, widths 2K,
  2K, 4K, 8K, 16K, 32K, 32K -> K, dilations 1, 1, 2, 4, 8, 16, 1, identity initialisation), as the
  released ``ct_*`` layers (42, 42, 84, ..., 672 -> 21 for VOC). ``context=False`` gives the front-end.
- ``up``: x8 upsampling of the logits by a fixed bilinear deconvolution (k 16, stride 8, pad 4), as
  ``make_upsample`` (:class:`zoo.layers.FixedBilinearUpsample`).

Deviations from the released Caffe model (documented, not bugs):
- Context padding: the released deploy net zero-pads the 66 x 66 map ONCE by 33 before ``ct_conv1_1``
  and runs every later context conv unpadded; zoo's ContextModule (and fyu's ``build_context``, the
  code that trains the module) zero-pads every layer to keep the size. The two agree away from the
  borders' reach only, so released weights give slightly different border responses.
- Upsampling: ``predict.py`` interpolates the softmax PROBABILITIES with its own bilinear map
  (output pixel h reads input h / 8); zoo upsamples the logits with the deconvolution above; the argmax
  can differ at class boundaries.
- Tiling: ``predict.py`` cuts images larger than 528 px into 900 x 900 tiles; zoo runs the whole
  padded image at once (identical for images up to 528 x 528, the VOC case, up to the context
  padding above: the released net always sees a full 900 x 900 tile, reflect-padded beyond the image).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from zoo.archs import register_arch
from zoo.errors import InputError
from zoo.layers import FixedBilinearUpsample
from zoo.ops._checks import check_shape
from zoo.ops.context_module import ContextModule

__all__ = ["DilationNet", "dilation8", "reflect_pad"]

# (name, out_channels, dilation); "pool" entries are 2x2/2 max pools
_FRONTEND = (
    ("conv1_1", 64, 1), ("conv1_2", 64, 1), ("pool", 0, 0),
    ("conv2_1", 128, 1), ("conv2_2", 128, 1), ("pool", 0, 0),
    ("conv3_1", 256, 1), ("conv3_2", 256, 1), ("conv3_3", 256, 1), ("pool", 0, 0),
    ("conv4_1", 512, 1), ("conv4_2", 512, 1), ("conv4_3", 512, 1),
    ("conv5_1", 512, 2), ("conv5_2", 512, 2), ("conv5_3", 512, 2),
)
LABEL_MARGIN = 186


def reflect_pad(x: Tensor, margin: int) -> Tensor:
    """Reflect (OpenCV ``BORDER_REFLECT_101``) padding by ``margin`` on every side, repeating the
    reflection when the margin is larger than the image (each step pads a dimension by at most its
    size - 1, which keeps the edges on the period of the reflected signal)."""
    h, w = x.shape[-2:]
    if margin > 0 and (h < 2 or w < 2):
        raise InputError(f"reflect_pad needs at least 2 x 2 pixels, got {h} x {w}")
    for dim in (-1, -2):
        left = margin
        while left > 0:
            step = min(left, x.shape[dim] - 1)
            x = F.pad(x, (step, step, 0, 0) if dim == -1 else (0, 0, step, step), mode="reflect")
            left -= step
    return x


class DilationNet(nn.Module):
    """VGG-16 dilated front-end (+ optional large context module) + fixed bilinear x8 upsampling.

    Input (B, 3, H, W) Caffe-normalised (BGR, 0..255 minus the mean). Output logits
    (B, K, 8 * h', 8 * w') with h' = (H + 2 * margin - 372) / 8 for H + 2 * margin - 4 divisible by 8
    (= (B, K, H, W) for H, W multiples of 8 with the default margin), in train and eval mode.
    """

    def __init__(self, num_classes: int = 21, *, context: bool = True, margin: int = LABEL_MARGIN,
                 fc_channels: int = 4096, dropout: float = 0.5) -> None:
        super().__init__()
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.num_classes, self.margin = num_classes, margin
        c_in = 3
        for name, c_out, d in _FRONTEND:
            if name != "pool":
                setattr(self, name, nn.Conv2d(c_in, c_out, 3, dilation=d))
                c_in = c_out
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.fc6 = nn.Conv2d(c_in, fc_channels, 7, dilation=4)
        self.fc7 = nn.Conv2d(fc_channels, fc_channels, 1)
        self.drop = nn.Dropout(dropout)
        self.final = nn.Conv2d(fc_channels, num_classes, 1)
        self.context = ContextModule(num_classes, "large") if context else None
        self.up = FixedBilinearUpsample(num_classes, 8)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Front-end convs: kaiming normal (fan_in; the paper starts from ImageNet VGG-16); ``final``
        N(0, 0.001), biases 0, as ``build_frontend_vgg``. The context module keeps its identity init."""
        for name, _, _ in _FRONTEND + (("fc6", 0, 0), ("fc7", 0, 0)):
            if name != "pool":
                conv = getattr(self, name)
                nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
                nn.init.zeros_(conv.bias)
        nn.init.normal_(self.final.weight, 0.0, 1e-3)
        nn.init.zeros_(self.final.bias)

    def frontend(self, x: Tensor) -> Tensor:
        """(B, 3, S, S') padded input -> (B, K, (S - 372) / 8, ...) class maps (Caffe ``fc-final``)."""
        for name, _, _ in _FRONTEND:
            x = self.pool(x) if name == "pool" else F.relu(getattr(self, name)(x))
        x = self.drop(F.relu(self.fc6(x)))
        x = self.drop(F.relu(self.fc7(x)))
        return self.final(x)

    def forward(self, x: Tensor) -> Tensor:
        check_shape(x, "B,C,H,W", "x", C=3)
        if self.margin:
            x = reflect_pad(x, self.margin)
        h, w = x.shape[-2:]
        if h < 380 or w < 380:
            raise InputError(
                f"DilationNet: the padded input is {h} x {w}; the unpadded front-end needs at least 380 x 380 "
                f"(image + 2 * margin, margin={self.margin})"
            )
        x = self.frontend(x)
        if self.context is not None:
            x = self.context(x)
        return self.up(x)


@register_arch("dilation8")
def dilation8(*, num_classes: int = 21, context: bool = True, margin: int = LABEL_MARGIN) -> DilationNet:
    """Dilation8 for PASCAL VOC (fyu/dilation ``dilation8_pascal_voc``): front-end + large context."""
    return DilationNet(num_classes, context=context, margin=margin)
