"""FlowNetS and FlowNetC optical flow networks, optionally with an LS-DFN layer.

Papers:
- FlowNet: Dosovitskiy, Fischer, Ilg, Haeusser, Hazirbas, Golkov, van der Smagt, Cremers, Brox,
  "FlowNet: Learning Optical Flow with Convolutional Networks", ICCV 2015, https://arxiv.org/abs/1504.06852
  (ports checked: ClementPinard/FlowNetPytorch ``models/{FlowNetS,FlowNetC,util}.py``,
  NVIDIA/flownet2-pytorch ``networks/{FlowNetS,FlowNetC,submodules}.py``, open-mmlab/mmflow
  ``configs/_base_/models/flownet{s,c}.py``, hmorimitsu/ptlflow ``models/flownet``).
- LS-DFN: Wu, Li, Yang, Bajaj, Ji, "Dynamic Filtering with Large Sampling Field for ConvNets",
  ECCV 2018, https://arxiv.org/abs/1803.07624 (operator: :mod:`zoo.ops.lsdfn`).

Architecture (width 1): conv = Conv2d(pad (k-1)//2) [+ BN] + LeakyReLU(0.1). FlowNetS encoder on the
6-channel pair: conv1 64 7x7/2, conv2 128 5x5/2, conv3 256 5x5/2, conv3_1 256, conv4 512/2, conv4_1,
conv5 512/2, conv5_1, conv6 1024/2, conv6_1. FlowNetC runs conv1..conv3 (3 -> 64 -> 128 -> 256, shared
weights) on each frame, correlates the two conv3 maps (:class:`zoo.ops.correlation.Correlation`: max
displacement 20, stride 2, 441 channels, divided by C; ``corr_max_displacement`` and ``corr_stride``
change the grid), LeakyReLU(0.1), concatenates
[conv_redir(conv3a) (1x1, 32), correlation] (473) and continues with conv3_1 and the FlowNetS trunk.
Refinement: at each level l = 5..2, ``concat_l = [encoder skip, deconv_l(concat_{l+1}), up(flow_{l+1})]``
(ConvTranspose 4x4/2 + LeakyReLU; flow up-sampling ConvTranspose(2, 2, 4, 2, 1)), ``predict_flow_l`` =
3x3 conv -> 2. flow2 is at 1/4 of the input resolution, in units of ``flow / div_flow`` (div_flow 20).

State-dict keys are FlowNetPytorch's (``conv1.0.weight``, ``conv_redir.0.*``, ``deconv5.0.weight``,
``predict_flow6.weight``, ``upsampled_flow6_to_5.weight``), so its checkpoints load 1:1
(:mod:`zoo.converters.flownet_pytorch`). Layer biases follow FlowNetPytorch by default (none on
deconv / predict / flow up-sampling layers); ``deconv_bias``, ``predict_bias``, ``upsample_bias`` give
the flownet2-pytorch and mmflow layouts, ``corr_normalize=False`` mmflow's unscaled correlation.

Outputs: training mode returns the tuple ``(flow2, flow3, flow4, flow5, flow6)`` in network units
(for the multi-scale loss on targets / div_flow, weights 0.005, 0.01, 0.02, 0.08, 0.32). Eval mode
returns ``div_flow * upsample_x4(flow2)`` (bilinear, align_corners=False, as flownet2-pytorch and
ptlflow): (B, 2, H, W) flow in pixels at the network input size (the padded size); the
``optical-flow`` postprocess crops it to the original image (see :mod:`zoo.tasks.optical_flow`).

Inputs: a (B, 6, H, W) tensor, frame 1 then frame 2, already normalised by the ``optical-flow``
transforms; H and W must be multiples of 64 (:class:`~zoo.errors.InputError` otherwise). ptlflow
compatibility: a dict ``{"images": (B, 2, 3, H, W)}`` with BGR frames in [0, 1] (ptlflow reads frames
with OpenCV) runs ptlflow's FlowNet preprocessing inside: per-frame per-channel mean subtraction,
BGR -> RGB flip, bilinear resize (align_corners=True) to multiples of 64; it returns
``{"flows": (B, 1, 2, H, W)}`` at the input size (resized back, vectors scaled), plus
``"flow_preds": [flow2, ..., flow6]`` in training mode.

LS-DFN variants (``lsdfn={...}``, keyword arguments of :class:`zoo.ops.lsdfn.LSDFN` without
``in_channels``): the seed places LS-DFN "at the third conv layer, where image pairs are merged into a
single branch volume in FlowNetC", with "a skip connection to the corresponding upsampling layer".
Decision: the layer reads the output of conv3_1 (the first layer after the merge in FlowNetC; the same
place, the end of the third conv stage, in FlowNetS), at 1/8 resolution, and its C' outputs are
concatenated to conv3_1's output. That concatenation is the level-3 trunk feature: it feeds conv4
(256 + C' input channels) and is the encoder skip of the level-3 refinement (``concat3``, hence
``predict_flow3`` and ``deconv2`` get C' more input channels). The paper's FlowNet C' is not given;
the registry uses C' = 24 (its value for DeepLab and R-FCN), 9 x 9 samples, sample stride 2, k = 3.
C' is not scaled by ``width``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.archs import register_arch
from zoo.errors import InputError
from zoo.flow import resize_flow
from zoo.ops._checks import check_floating, check_shape
from zoo.ops.correlation import Correlation
from zoo.ops.lsdfn import LSDFN

__all__ = ["FlowNet", "flownets", "flownetc"]

_LEVELS = (6, 5, 4, 3, 2)


def _conv(cin: int, cout: int, kernel_size: int = 3, stride: int = 1, batch_norm: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel_size, stride, (kernel_size - 1) // 2, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.LeakyReLU(0.1))
    return nn.Sequential(*layers)


def _deconv(cin: int, cout: int, bias: bool) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=bias), nn.LeakyReLU(0.1))


class FlowNet(nn.Module):
    """FlowNetS (``correlation=False``) or FlowNetC (``correlation=True``); see the module docstring.

    Args:
        correlation: FlowNetC's two-stream encoder with the correlation layer.
        width: channel multiplier of every conv / deconv layer (correlation keeps 441 channels).
        batch_norm: BN after every encoder conv (FlowNetPytorch's ``flownets_bn``; convs lose their bias).
        lsdfn: keyword arguments of :class:`~zoo.ops.lsdfn.LSDFN` (``out_channels``, ``kernel_size``,
            ``samples_per_side``, ``sample_stride``, ...), or None for the plain network.
        deconv_bias, predict_bias, upsample_bias: biases of the deconv / predict_flow / flow
            up-sampling layers (all False in FlowNetPytorch; flownet2-pytorch and mmflow: see converters).
        corr_normalize: divide the correlation by C (FlowNetPytorch, flownet2); mmflow does not.
        corr_max_displacement, corr_stride: the correlation's displacement range and step, in conv3
            (1/8-scale) pixels; the paper's 20 and 2 by default. (2 * d // s + 1)^2 channels.
        div_flow: network units -> pixels factor of the eval output (20).
    """

    def __init__(
        self,
        *,
        correlation: bool,
        width: float = 1.0,
        batch_norm: bool = False,
        lsdfn: Mapping[str, Any] | None = None,
        deconv_bias: bool = False,
        predict_bias: bool = False,
        upsample_bias: bool = False,
        corr_normalize: bool = True,
        corr_max_displacement: int = 20,
        corr_stride: int = 2,
        div_flow: float = 20.0,
    ) -> None:
        super().__init__()
        if not width > 0:
            raise ValueError(f"width must be positive, got {width!r}")
        c = {n: max(1, int(round(n * width))) for n in (32, 64, 128, 256, 512, 1024)}
        self.correlation, self.width, self.div_flow = correlation, float(width), float(div_flow)
        bn = batch_norm
        self.conv1 = _conv(3 if correlation else 6, c[64], 7, 2, bn)
        self.conv2 = _conv(c[64], c[128], 5, 2, bn)
        self.conv3 = _conv(c[128], c[256], 5, 2, bn)
        if correlation:
            self.conv_redir = _conv(c[256], c[32], 1, 1, bn)
            self.corr = Correlation(max_displacement=corr_max_displacement, stride=corr_stride, kernel_size=1,
                                    normalize=corr_normalize)
            self.conv3_1 = _conv(c[32] + self.corr.out_channels, c[256], 3, 1, bn)
        else:
            self.conv3_1 = _conv(c[256], c[256], 3, 1, bn)
        extra = 0
        self.lsdfn: LSDFN | None = None
        if lsdfn is not None:
            args = dict(lsdfn)
            if "in_channels" in args:
                raise ValueError("lsdfn: in_channels is set by the model (conv3_1's output channels)")
            self.lsdfn = LSDFN(c[256], **args)
            extra = self.lsdfn.out_channels
        self.conv4 = _conv(c[256] + extra, c[512], 3, 2, bn)
        self.conv4_1 = _conv(c[512], c[512], 3, 1, bn)
        self.conv5 = _conv(c[512], c[512], 3, 2, bn)
        self.conv5_1 = _conv(c[512], c[512], 3, 1, bn)
        self.conv6 = _conv(c[512], c[1024], 3, 2, bn)
        self.conv6_1 = _conv(c[1024], c[1024], 3, 1, bn)

        skip = {5: c[512], 4: c[512], 3: c[256] + extra, 2: c[128]}      # encoder skip per level
        up = {5: c[512], 4: c[256], 3: c[128], 2: c[64]}                 # deconv output per level
        concat = {6: c[1024], **{l: skip[l] + up[l] + 2 for l in (5, 4, 3, 2)}}
        for l in (5, 4, 3, 2):
            self.add_module(f"deconv{l}", _deconv(concat[l + 1], up[l], deconv_bias))
        for l in _LEVELS:
            self.add_module(f"predict_flow{l}", nn.Conv2d(concat[l], 2, 3, 1, 1, bias=predict_bias))
        for l in (6, 5, 4, 3):
            self.add_module(f"upsampled_flow{l}_to_{l - 1}", nn.ConvTranspose2d(2, 2, 4, 2, 1, bias=upsample_bias))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """FlowNetPytorch's init: Kaiming normal (a = 0.1) for conv / deconv weights, zero biases,
        BN weight 1 and bias 0; the LS-DFN layer keeps its own init (residual start)."""
        skip = set(self.lsdfn.modules()) if self.lsdfn is not None else set()
        for m in self.modules():
            if m in skip:
                continue
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, 0.1)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.lsdfn is not None:
            self.lsdfn.reset_parameters()

    def inserted_input_channels(self) -> dict[str, tuple[int, int, int]]:
        """Where the LS-DFN output enters the plain network: ``{parameter: (dim, start, count)}``.

        Its channels follow conv3_1's in every consumer (conv4, predict_flow3, deconv2), so the plain
        FlowNet's tensors fit these with ``count`` input channels inserted at ``start``; zero there, the
        LS-DFN network computes exactly what the plain one does (see :func:`zoo.training.warm_start`).
        """
        if self.lsdfn is None:
            return {}
        start, count = self.conv3_1[0].out_channels, self.lsdfn.out_channels
        return {"conv4.0.weight": (1, start, count), "predict_flow3.weight": (1, start, count),
                "deconv2.0.weight": (0, start, count)}   # ConvTranspose2d weights are (in, out, kH, kW)

    # -------------------------------------------------------------------------------- forward
    def _check(self, x: Tensor) -> None:
        s = check_shape(x, "B,C,H,W", "x", C=6)
        check_floating(x, "x")
        if s["H"] % 64 or s["W"] % 64 or s["H"] == 0 or s["W"] == 0:
            raise InputError(
                f"FlowNet input height and width must be positive multiples of 64, got {s['H']} x {s['W']}; "
                "pad the pair with the 'optical-flow' transforms (zoo.tasks.optical_flow.OpticalFlowTransforms)"
            )

    def multiscale(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(flow2, flow3, flow4, flow5, flow6) in network units for a checked (B, 6, H, W) input."""
        if self.correlation:
            b = x.shape[0]
            # Shared weights: both frames go through conv1..conv3 as one batch of 2B.
            f2 = self.conv2(self.conv1(torch.cat([x[:, :3], x[:, 3:]], 0)))
            f3 = self.conv3(f2)
            out_conv2, f3a, f3b = f2[:b], f3[:b], f3[b:]
            corr = F.leaky_relu(self.corr(f3a, f3b), 0.1)
            out_conv3 = self.conv3_1(torch.cat([self.conv_redir(f3a), corr], 1))
        else:
            out_conv2 = self.conv2(self.conv1(x))
            out_conv3 = self.conv3_1(self.conv3(out_conv2))
        if self.lsdfn is not None:
            out_conv3 = torch.cat([out_conv3, self.lsdfn(out_conv3)], 1)
        out_conv4 = self.conv4_1(self.conv4(out_conv3))
        out_conv5 = self.conv5_1(self.conv5(out_conv4))
        feat = self.conv6_1(self.conv6(out_conv5))
        skips = {5: out_conv5, 4: out_conv4, 3: out_conv3, 2: out_conv2}
        flows = []
        for level in _LEVELS:
            flow = getattr(self, f"predict_flow{level}")(feat)
            flows.append(flow)
            if level == 2:
                break
            up_flow = getattr(self, f"upsampled_flow{level}_to_{level - 1}")(flow)
            up_feat = getattr(self, f"deconv{level - 1}")(feat)
            feat = torch.cat([skips[level - 1], up_feat, up_flow], 1)
        flow6, flow5, flow4, flow3, flow2 = flows
        return flow2, flow3, flow4, flow5, flow6

    def _forward_ptlflow(self, inputs: Mapping[str, Tensor]) -> dict[str, Any]:
        """ptlflow's interface: {"images": (B, 2, 3, H, W) BGR in [0, 1]} -> {"flows": (B, 1, 2, H, W)}."""
        images = inputs.get("images") if isinstance(inputs, Mapping) else None
        if images is None:
            raise InputError("a dict input must hold 'images': a (B, 2, 3, H, W) tensor (ptlflow layout)")
        s = check_shape(images, "B,N,C,H,W", "inputs['images']", N=2, C=3)
        check_floating(images, "inputs['images']")
        b, h, w = s["B"], s["H"], s["W"]
        if h == 0 or w == 0:
            raise InputError(f"inputs['images'] must not be empty, got {tuple(images.shape)}")
        x = images - images.mean(dim=(3, 4), keepdim=True)          # per frame and channel (ptlflow)
        x = x.flip(2).reshape(b, 6, h, w)                            # BGR -> RGB
        th, tw = -(-h // 64) * 64, -(-w // 64) * 64
        if (th, tw) != (h, w):
            x = F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=True)
        flows = self.multiscale(x)
        full = self.div_flow * F.interpolate(flows[0], scale_factor=4, mode="bilinear", align_corners=False)
        full = resize_flow(full, (h, w), align_corners=True)
        out: dict[str, Any] = {"flows": full.unsqueeze(1)}
        if self.training:
            out["flow_preds"] = list(flows)
        return out

    def forward(self, x: Tensor | Mapping[str, Tensor]):
        if isinstance(x, Mapping):
            return self._forward_ptlflow(x)
        self._check(x)
        flows = self.multiscale(x)
        if self.training:
            return flows
        return self.div_flow * F.interpolate(flows[0], scale_factor=4, mode="bilinear", align_corners=False)


def _build(correlation: bool, width: float, batch_norm: bool, lsdfn: Mapping[str, Any] | None, **kw: Any) -> FlowNet:
    return FlowNet(correlation=correlation, width=width, batch_norm=batch_norm, lsdfn=lsdfn, **kw)


@register_arch("flownets")
def flownets(
    *,
    width: float = 1.0,
    batch_norm: bool = False,
    lsdfn: Mapping[str, Any] | None = None,
    deconv_bias: bool = False,
    predict_bias: bool = False,
    upsample_bias: bool = False,
    div_flow: float = 20.0,
) -> FlowNet:
    """FlowNetS (FlowNetPytorch layout at the defaults); ``lsdfn`` adds the LS-DFN layer after conv3_1."""
    return _build(False, width, batch_norm, lsdfn, deconv_bias=deconv_bias, predict_bias=predict_bias,
                  upsample_bias=upsample_bias, div_flow=div_flow)


@register_arch("flownetc")
def flownetc(
    *,
    width: float = 1.0,
    batch_norm: bool = False,
    lsdfn: Mapping[str, Any] | None = None,
    deconv_bias: bool = False,
    predict_bias: bool = False,
    upsample_bias: bool = False,
    corr_normalize: bool = True,
    corr_max_displacement: int = 20,
    corr_stride: int = 2,
    div_flow: float = 20.0,
) -> FlowNet:
    """FlowNetC (FlowNetPytorch layout at the defaults); ``lsdfn`` adds the LS-DFN layer after conv3_1,
    on the merged (correlation + redirect) volume."""
    return _build(True, width, batch_norm, lsdfn, deconv_bias=deconv_bias, predict_bias=predict_bias,
                  upsample_bias=upsample_bias, corr_normalize=corr_normalize,
                  corr_max_displacement=corr_max_displacement, corr_stride=corr_stride, div_flow=div_flow)
