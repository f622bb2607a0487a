"""Multi-scale context aggregation module (Yu & Koltun, ICLR 2016).

Paper: "Multi-Scale Context Aggregation by Dilated Convolutions", https://arxiv.org/abs/1511.07122.
Reference code (Caffe net builder): fyu/dilation, ``network.py`` ``build_context``.

What it computes: seven 3x3 convolutions with dilations 1, 1, 2, 4, 8, 16, 1 (zero "same" padding equal
to the dilation, as ``build_context``), each followed by ReLU, then a 1x1 convolution back to C channels
(no ReLU). Input and output are (B, C, H, W), so the module can be inserted after any dense predictor.

Variants (paper, Table 1):
- ``basic``: C channels in every layer.
- ``large``: widths 2C, 2C, 4C, 8C, 16C, 32C, 32C, then the 1x1 back to C.

Identity initialisation (paper, Section 3), biases zero:
- basic: ``k^b(t, a) = [t = 0][a = b]``: every 3x3 kernel is a centred one-hot per channel and the 1x1 is
  the identity, so a fresh basic module is EXACTLY the identity on non-negative input (the ReLUs then do
  nothing; a negative input is clipped to 0 by the first ReLU).
- large: ``k^b(t, a) = C / c_{i+1}`` if ``t = 0`` and ``floor(a C / c_i) = floor(b C / c_{i+1})``, else
  ``eps ~ N(0, sigma^2)`` with ``sigma << C / c_{i+1}`` (the noise breaks ties between the copies of a
  channel). Without noise every channel of layer i in group ``g = floor(a C / c_i)`` holds
  ``x_g * C / c_i`` (an equal split of input channel g) and the final 1x1 sums the copies back, so the
  large module is also the identity on non-negative input up to the noise. Interpretation choice:
  ``sigma = init_noise * C / c_{i+1}`` with ``init_noise = 1e-3`` for large and 0 for basic (the paper
  gives only ``sigma << C / c_{i+1}``); noise is added to the off-identity entries only.

Parameter names follow the Caffe layer names of ``build_context`` (``ctx_conv1_1`` ... ``ctx_fc1``,
``ctx_final``) so the released Dilation8/10 context weights map by name.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import InputError
from zoo.ops._checks import check_floating, check_shape

__all__ = ["ContextModule", "context_module", "context_module_reference", "CONTEXT_DILATIONS"]

CONTEXT_DILATIONS: tuple[int, ...] = (1, 1, 2, 4, 8, 16, 1, 1)  # last entry: the 1x1 output layer
_LAYER_NAMES = ("ctx_conv1_1", "ctx_conv1_2", "ctx_conv2_1", "ctx_conv3_1", "ctx_conv4_1", "ctx_conv5_1",
                "ctx_fc1", "ctx_final")
_WIDTHS = {"basic": (1, 1, 1, 1, 1, 1, 1), "large": (2, 2, 4, 8, 16, 32, 32)}


def _check_layers(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
                  dilations: Sequence[int]) -> None:
    check_shape(x, "B,C,H,W", "x")
    check_floating(x, "x")
    if not (len(weights) == len(biases) == len(dilations)):
        raise InputError(f"context_module: got {len(weights)} weights, {len(biases)} biases and "
                         f"{len(dilations)} dilations; give one of each per layer")


def context_module(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
                   dilations: Sequence[int] = CONTEXT_DILATIONS) -> torch.Tensor:
    """Fast path: a chain of dilated 'same' convolutions, ReLU after all but the last.

    x: (B, C, H, W); weights[i]: (c_{i+1}, c_i, k, k) with odd k; biases[i]: (c_{i+1},).
    Returns (B, c_last, H, W).
    """
    _check_layers(x, weights, biases, dilations)
    last = len(weights) - 1
    for i, (w, b, d) in enumerate(zip(weights, biases, dilations)):
        x = F.conv2d(x, w, b, padding=d * (w.shape[-1] // 2), dilation=d)
        if i < last:
            x = F.relu(x)
    return x


def context_module_reference(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
                             dilations: Sequence[int] = CONTEXT_DILATIONS) -> torch.Tensor:
    """Plain implementation: each layer as an explicit sum over kernel taps of channel-mixing products."""
    _check_layers(x, weights, biases, dilations)
    last = len(weights) - 1
    for i, (w, b, d) in enumerate(zip(weights, biases, dilations)):
        k = w.shape[-1]
        r = d * (k // 2)
        h, wd = x.shape[-2:]
        xp = F.pad(x, (r, r, r, r))
        out = b.view(1, -1, 1, 1).expand(x.shape[0], -1, h, wd).clone()
        for ty in range(k):
            for tx in range(k):
                patch = xp[:, :, ty * d: ty * d + h, tx * d: tx * d + wd]
                out = out + torch.einsum("oc,bchw->bohw", w[:, :, ty, tx], patch)
        x = out.clamp_min(0) if i < last else out
    return x


class ContextModule(nn.Module):
    """Yu & Koltun context module, ``variant`` ``"basic"`` or ``"large"``; (B, C, H, W) -> (B, C, H, W).

    ``init_noise``: relative std of the tie-breaking noise of the generalised identity initialisation
    (default 0 for basic, 1e-3 for large; see the module docstring).
    """

    def __init__(self, channels: int, variant: str = "basic", init_noise: float | None = None,
                 device=None, dtype=None) -> None:
        super().__init__()
        if variant not in _WIDTHS:
            raise ValueError(f"ContextModule: variant must be one of {sorted(_WIDTHS)}, got {variant!r}")
        if channels < 1:
            raise ValueError(f"ContextModule: channels must be positive, got {channels}")
        self.channels = channels
        self.variant = variant
        self.init_noise = (0.0 if variant == "basic" else 1e-3) if init_noise is None else float(init_noise)
        self.widths = tuple(m * channels for m in _WIDTHS[variant]) + (channels,)
        self.dilations = CONTEXT_DILATIONS
        c_in = channels
        for name, c_out, d in zip(_LAYER_NAMES, self.widths, self.dilations):
            k = 1 if name == "ctx_final" else 3
            setattr(self, name, nn.Conv2d(c_in, c_out, k, padding=d * (k // 2), dilation=d,
                                          device=device, dtype=dtype))
            c_in = c_out
        self.reset_parameters()

    def layers(self) -> list[nn.Conv2d]:
        return [getattr(self, n) for n in _LAYER_NAMES]

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """(Generalised) identity initialisation of every layer; biases zero."""
        big_c = self.channels
        for conv in self.layers():
            c_out, c_in, k, _ = conv.weight.shape
            a = torch.arange(c_in, device=conv.weight.device)
            b = torch.arange(c_out, device=conv.weight.device)
            match = (b[:, None] * big_c // c_out) == (a[None, :] * big_c // c_in)  # floor(bC/c') == floor(aC/c)
            value = big_c / c_out
            centre = match.to(conv.weight.dtype) * value
            conv.weight.zero_()
            if self.init_noise > 0:
                conv.weight.normal_(0.0, self.init_noise * value)
                conv.weight[:, :, k // 2, k // 2].masked_fill_(match, 0.0)
            conv.weight[:, :, k // 2, k // 2] += centre
            conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(x, "B,C,H,W", "x", C=self.channels)
        layers = self.layers()
        return context_module(x, [m.weight for m in layers], [m.bias for m in layers], self.dilations)
