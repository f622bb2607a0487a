"""Dynamic Filter Networks: sample-specific convolution and position-specific local filtering.

Paper: De Brabandere, Jia, Tuytelaars, Van Gool, "Dynamic Filter Networks", NIPS 2016
(https://arxiv.org/abs/1605.09673). A filter-generating network produces filters from one input; the
dynamic filtering layer applies them to another input. Two layers:

* dynamic convolution (``d = 1``): one filter bank per sample, ``filters`` (B, out, in/groups, kh, kw),
  applied like ``F.conv2d`` to that sample only. :func:`dynamic_conv2d` / :class:`DynamicConv2d`.
* dynamic local filtering (``d = H*W``): one k x k filter per sample AND per output position,
  ``out[b, c, y, x] = sum_{i,j} f[b, (c,) i*k+j, y, x] * x[b, c, y + d*(i - (k-1)/2), x + d*(j - (k-1)/2)]``
  with zero padding, stride 1, output size = input size. The filter is shared by all channels
  (``filters`` (B, k*k, H, W), DFN) or given per channel (``filters`` (B, C*k*k, H, W), channel-major:
  index ``c*k*k + i*k + j``, the layout of HDFNet's DepthDC). ``softmax=True`` normalises each
  position's k*k taps with a softmax, as in DFN's video prediction. :func:`dynamic_local_filter` /
  :class:`DynamicLocalFilter`.

This file also holds the helpers shared by every per-sample-kernel operator in ``zoo.ops``
(CondConv, Dynamic Convolution, DyNet, DMNet, CondInst): :func:`per_sample_conv2d`, the grouped-conv
batch trick (B kernels applied as ONE grouped conv with ``groups = B * groups`` over a 1 x B*C x H x W
view of the batch; a per-sample loop on the CPU for large stacked kernels, see
:func:`per_sample_conv2d_implementation`), :func:`mix_kernels`, the per-sample weighted sum of a bank of kernels, and
:func:`kernel_mixture_conv2d` (+ ``_reference``), the kernel-mixture convolution
``y_b = conv(x_b, sum_e c[b, e] W_e) + sum_e c[b, e] b_e`` that CondConv (sigmoid routing), Dynamic
Convolution (softmax attention) and DyNet (unconstrained linear coefficients) are thin wrappers of; they
differ only in how the coefficients ``c`` (B, E) are produced.

Interpretation choices (the paper is silent): local filtering uses zero padding and supports a dilation
of the taps (HDFNet uses 1, 3, 5); odd k only, so that the filter is centred. The fast local-filter path
accumulates the k*k shifted, filter-weighted copies of the padded input (peak memory ~ one input,
2-7x faster on CPU than unfold-multiply-sum, which materialises k*k copies); the reference is the
unfold-multiply-sum formulation. Under torch.export (and so ONNX export) the fast path traces the
unfold formulation instead: the tap loop would unroll into k*k slice + multiply-add nodes per call
(about 6,800 nodes for dfn-moving-mnist, whose ONNX export then takes minutes), one unfold is 4 nodes.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from zoo.errors import InputError
from zoo.ops._checks import check_floating, check_same, check_shape

_Size2 = Union[int, tuple[int, int]]
_Padding = Union[int, tuple[int, int], str]

__all__ = [
    "per_sample_conv2d",
    "per_sample_conv2d_implementation",
    "mix_kernels",
    "kernel_mixture_conv2d",
    "kernel_mixture_conv2d_reference",
    "MixtureNames",
    "dynamic_conv2d",
    "dynamic_conv2d_reference",
    "DynamicConv2d",
    "dynamic_local_filter",
    "dynamic_local_filter_reference",
    "DynamicLocalFilter",
]


# --------------------------------------------------------------------------------------------------
# shared helpers


# Per-sample loop on the CPU once the batch's stacked kernels or its input exceed this many elements
# (see per_sample_conv2d_implementation for the measurements).
_CPU_GROUPED_MAX_KERNEL_NUMEL = 2**22
_CPU_GROUPED_MAX_INPUT_NUMEL = 2**21


def per_sample_conv2d_implementation(device: torch.device, input_shape: Sequence[int],
                                     weight_shape: Sequence[int]) -> str:
    """Which formulation :func:`per_sample_conv2d` runs: ``"grouped"`` (one conv with the batch folded
    into the groups), ``"loop"`` (one ``F.conv2d`` per sample) or ``"unfold"`` (unfold + batched matmul).

    ``input_shape`` is x's (B, C, H, W), ``weight_shape`` the per-sample kernels' (B, out, C/groups, kh,
    kw). A pure function of the device type, the shapes and whether torch.export is tracing (no
    timing, no host sync); the dtype does not change the choice. Rule and measurements:

    - under torch.export: ``"unfold"`` (ONNX's Conv cannot take a batch-sized group count).
    - CPU: ``"loop"`` when B > 1 and either the stacked kernels have more than 2**22 elements (B * out *
      C/groups * kh * kw) or the input more than 2**21 (B * C * H * W), else ``"grouped"``. oneDNN's
      grouped conv falls off a cliff past those sizes while B dense convs do not. Measured on this
      project's CPU (2-core AMD EPYC, torch 2.14.1, one thread, CPU time, 2026-12-06, ``python
      benchmarks/dispatch_crossover.py --family per_sample_conv2d``; the machine was loaded, single
      rows vary by up to 30%): grouped conv takes 2.0-2.2x the loop's time for 512->512 3x3 at 7x7
      and batch 4, 8 and 16 (kernels 9.4M-38M elements), 1.5x for 256->256 3x3 at 14x14 and batch 16
      (9.4M), 2.3-2.4x for depthwise 96-channel 3x3 at 56x56 and batch 8 and 16 (input 2.4M and 4.8M
      elements; 1.4 vs 1.6 ms at batch 4, 1.2M) and 4.6x for depthwise 32-channel 112x112 at batch 8
      (3.2M). Below both thresholds the two are within noise (64->64 3x3 at 56x56, batch 8, the
      benchmark's DyConv setting: input 1.6M elements, grouped conv 0.73-1.43x the loop's speed
      across six runs) or the grouped conv wins (depthwise 960-channel 7x7: about 2x). DyConv at
      batch 8 (``python benchmarks/ops.py --only dynamic --threads 1 --clock cpu``, same day):
      64->64 56x56 (grouped picked) 1.26x its per-sample reference; 512->512 7x7 (loop picked) 2.44x
      the reference and 1.59x the grouped conv.
    - CUDA and every other device (meta included): ``"grouped"`` (one kernel launch instead of B).
    """
    if torch.compiler.is_exporting():
        return "unfold"
    batch = input_shape[0]
    if device.type == "cpu" and batch > 1 and (math.prod(weight_shape) > _CPU_GROUPED_MAX_KERNEL_NUMEL
                                               or math.prod(input_shape) > _CPU_GROUPED_MAX_INPUT_NUMEL):
        return "loop"
    return "grouped"


def per_sample_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                      stride: _Size2 = 1, padding: _Padding = 0, dilation: _Size2 = 1, groups: int = 1) -> torch.Tensor:
    """Convolve each sample with its own kernel (no input checks).

    ``x`` (B, C, H, W), ``weight`` (B, out, C/groups, kh, kw), ``bias`` (B, out) or None ->
    (B, out, H', W'). Three formulations, picked by :func:`per_sample_conv2d_implementation`:
    the grouped-conv batch trick (the batch folded into channels, (1, B*C, H, W), and the B kernels
    stacked into (B*out, C/groups, kh, kw) with ``groups = B*groups``, so group ``b*groups + g`` of
    the big conv is group ``g`` of sample ``b``; the single place in zoo where this trick lives), a
    loop of one ``F.conv2d`` per sample (faster on the CPU for large stacked kernels), and under
    torch.export :func:`_per_sample_conv2d_unfold` (the batch-sized group count would be symbolic,
    which ONNX's Conv cannot express: its ``group`` is an attribute). Callers check shapes.
    """
    implementation = per_sample_conv2d_implementation(x.device, x.shape, weight.shape)
    if implementation == "unfold":
        return _per_sample_conv2d_unfold(x, weight, bias, stride, padding, dilation, groups)
    if implementation == "loop":
        return _per_sample_conv2d_loop(x, weight, bias, stride, padding, dilation, groups)
    return _per_sample_conv2d_grouped(x, weight, bias, stride, padding, dilation, groups)


def _per_sample_conv2d_loop(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: _Size2,
                            padding: _Padding, dilation: _Size2, groups: int) -> torch.Tensor:
    """:func:`per_sample_conv2d` as one ``F.conv2d`` per sample."""
    if x.shape[0] == 0:
        return _per_sample_conv2d_grouped(x, weight, bias, stride, padding, dilation, groups)
    return torch.cat([F.conv2d(x[b: b + 1], weight[b], None if bias is None else bias[b], stride, padding,
                               dilation, groups) for b in range(x.shape[0])])


def _per_sample_conv2d_grouped(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: _Size2,
                               padding: _Padding, dilation: _Size2, groups: int) -> torch.Tensor:
    """:func:`per_sample_conv2d` as one grouped conv over the batch folded into channels."""
    batch, channels, height, width = x.shape
    out_channels = weight.shape[1]
    if batch == 0:  # groups=0 is not a valid conv; return the empty result with the right shape
        return F.conv2d(x, weight.new_zeros(weight.shape[1:]), None, stride, padding, dilation, groups)
    # reshape, not view: works for channels_last inputs and non-contiguous generated weights
    out = F.conv2d(
        x.reshape(1, batch * channels, height, width),
        weight.reshape(batch * out_channels, *weight.shape[2:]),
        None if bias is None else bias.reshape(batch * out_channels),
        stride,
        padding,
        dilation,
        groups * batch,
    )
    return out.reshape(batch, out_channels, out.shape[-2], out.shape[-1])


def _per_sample_conv2d_unfold(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: _Size2,
                              padding: _Padding, dilation: _Size2, groups: int) -> torch.Tensor:
    """:func:`per_sample_conv2d` as unfold + batched matmul (batch-size independent graph; k*k copies of x)."""
    batch, channels, height, width = x.shape
    out_channels, kh, kw = weight.shape[1], weight.shape[-2], weight.shape[-1]
    pair = torch.nn.modules.utils._pair
    stride, dilation = pair(stride), pair(dilation)
    if padding == "same":  # F.conv2d's "same": the odd pixel of an even total goes right / bottom
        total = [d * (k - 1) for d, k in zip(dilation, (kh, kw))]
        x = F.pad(x, (total[1] // 2, total[1] - total[1] // 2, total[0] // 2, total[0] - total[0] // 2))
        height, width = x.shape[-2:]
    padding = (0, 0) if isinstance(padding, str) else pair(padding)
    out_h = (height + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (width + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    patches = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)   # (B, C*kh*kw, L)
    patches = patches.reshape(batch, groups, -1, patches.shape[-1])                    # (B, G, C/G*kh*kw, L)
    kernels = weight.reshape(batch, groups, out_channels // groups, -1)                # (B, G, out/G, C/G*kh*kw)
    out = (kernels @ patches).reshape(batch, out_channels, out_h, out_w)
    return out if bias is None else out + bias.reshape(batch, out_channels, 1, 1)


def mix_kernels(
    coefficients: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Per-sample linear combination of a kernel bank: ``W_b = sum_e coefficients[b, e] * weight[e]``.

    ``coefficients`` (B, E), ``weight`` (E, *kernel_shape), ``bias`` (E, out) or None ->
    (B, *kernel_shape), (B, out) or None. One matmul; used by CondConv, DyConv and DyNet.
    """
    mixed = (coefficients @ weight.reshape(weight.shape[0], -1)).reshape(coefficients.shape[0], *weight.shape[1:])
    mixed_bias = None if bias is None else coefficients @ bias
    return mixed, mixed_bias


def _check_input(x: torch.Tensor, groups: int) -> dict[str, int]:
    """x (B, C, H, W) floating point with C divisible by ``groups``; returns the sizes by name."""
    sizes = check_shape(x, "B,C,H,W", "x")
    check_floating(x, "x")
    if groups < 1 or sizes["C"] % groups:
        raise InputError(f"x has C={sizes['C']} channels, which groups={groups} does not divide")
    return sizes


def _check_kernel_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], groups: int, weight_name: str
) -> None:
    """Checks for a per-sample conv: x (B, C, H, W), weight (B, out, C/groups, kh, kw), bias (B, out)."""
    sizes = _check_input(x, groups)
    w = check_shape(weight, "B,out,in_per_group,kh,kw", weight_name, B=sizes["B"], in_per_group=sizes["C"] // groups)
    check_same(x, weight, f"x and {weight_name}")
    if w["out"] % groups:
        raise InputError(f"{weight_name} has out={w['out']} channels, which groups={groups} does not divide")
    if bias is not None:
        check_shape(bias, "B,out", "bias", B=sizes["B"], out=w["out"])
        check_same(x, bias, "x and bias")


class MixtureNames(NamedTuple):
    """What the caller calls the mixture's tensors, so that input errors name its own arguments
    (e.g. CondConv: ``MixtureNames("routing_weights", "weight", "E")``)."""

    coefficients: str = "coefficients"
    bank: str = "bank"
    count: str = "E"  # the letter of the bank size in the shapes shown


def _check_kernel_mixture(
    x: torch.Tensor, coefficients: torch.Tensor, bank: torch.Tensor, bias: Optional[torch.Tensor], groups: int,
    names: MixtureNames,
) -> None:
    """Checks for a kernel mixture: x (B, C, H, W), coefficients (B, E), bank (E, out, C/groups, kh, kw),
    bias (E, out); every tensor on x's device and dtype."""
    sizes = _check_input(x, groups)
    e = names.count
    w = check_shape(bank, f"{e},out,in_per_group,kh,kw", names.bank, in_per_group=sizes["C"] // groups)
    check_shape(coefficients, f"B,{e}", names.coefficients, B=sizes["B"], **{e: w[e]})
    check_same(x, bank, f"x and {names.bank}")
    check_same(x, coefficients, f"x and {names.coefficients}")
    if bias is not None:
        check_shape(bias, f"{e},out", "bias", out=w["out"], **{e: w[e]})
        check_same(x, bias, "x and bias")


def kernel_mixture_conv2d(
    x: torch.Tensor, coefficients: torch.Tensor, bank: torch.Tensor, bias: Optional[torch.Tensor] = None,
    stride: _Size2 = 1, padding: _Padding = 0, dilation: _Size2 = 1, groups: int = 1,
    *, names: MixtureNames = MixtureNames(),
) -> torch.Tensor:
    """Kernel-mixture convolution: ``conv(x_b, sum_e c[b,e] W_e) + sum_e c[b,e] b_e`` for every sample b.

    ``x`` (B, C, H, W), ``coefficients`` c (B, E) (any real numbers; CondConv, DyConv and DyNet constrain
    them before the call), ``bank`` (E, out, C/groups, kh, kw), ``bias`` (E, out) or None ->
    (B, out, H', W'); conv arguments as ``F.conv2d``. ``names`` renames the tensors in input errors.
    Fast path: one matmul mixes the bank (:func:`mix_kernels`), one per-sample conv (:func:`per_sample_conv2d`).

    >>> kernel_mixture_conv2d(torch.randn(2, 4, 8, 8), torch.rand(2, 3), torch.randn(3, 6, 4, 3, 3), padding=1).shape
    torch.Size([2, 6, 8, 8])
    """
    _check_kernel_mixture(x, coefficients, bank, bias, groups, names)
    kernels, biases = mix_kernels(coefficients, bank, bias)
    return per_sample_conv2d(x, kernels, biases, stride, padding, dilation, groups)


def kernel_mixture_conv2d_reference(
    x: torch.Tensor, coefficients: torch.Tensor, bank: torch.Tensor, bias: Optional[torch.Tensor] = None,
    stride: _Size2 = 1, padding: _Padding = 0, dilation: _Size2 = 1, groups: int = 1,
    *, names: MixtureNames = MixtureNames(),
) -> torch.Tensor:
    """Plain reference of :func:`kernel_mixture_conv2d`: per sample, an explicit sum over the bank and one
    ``F.conv2d``."""
    _check_kernel_mixture(x, coefficients, bank, bias, groups, names)
    outs = []
    for b in range(x.shape[0]):
        kernel = sum(coefficients[b, e] * bank[e] for e in range(bank.shape[0]))
        kernel_bias = None if bias is None else sum(coefficients[b, e] * bias[e] for e in range(bank.shape[0]))
        outs.append(F.conv2d(x[b : b + 1], kernel, kernel_bias, stride, padding, dilation, groups))
    return torch.cat(outs, 0)


class _ConvLayer(nn.Module):
    """Base of the per-sample-kernel layers: validates and stores the ``nn.Conv2d`` hyperparameters
    (no parameters of its own; subclasses create ``bias`` or set it to None)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: _Size2, stride: _Size2,
                 padding: _Padding, dilation: _Size2, groups: int) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups

    def _make_bias(self, bias: bool, *shape: int, device=None, dtype=None) -> None:
        """Create the ``bias`` Parameter of ``shape`` (uninitialised) when ``bias`` is true, else register None."""
        if bias:
            self.bias = nn.Parameter(torch.empty(*shape, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)

    def _reset_bank(self, bank: torch.Tensor) -> None:
        """Initialise every kernel of a bank (E, out, in/groups, kh, kw) independently like ``nn.Conv2d``
        (kaiming-uniform a=sqrt(5)) and ``self.bias`` (E, out), if any, uniform in +-1/sqrt(fan_in)."""
        for e in range(bank.shape[0]):
            nn.init.kaiming_uniform_(bank[e], a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(math.prod(bank.shape[2:]))
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, bias={self.bias is not None}")


# --------------------------------------------------------------------------------------------------
# dynamic convolution (one filter per sample)


def dynamic_conv2d(x: torch.Tensor, filters: torch.Tensor, bias: Optional[torch.Tensor] = None,
                   stride: _Size2 = 1, padding: _Padding = 0, dilation: _Size2 = 1, groups: int = 1) -> torch.Tensor:
    """DFN dynamic convolution: sample b is convolved with ``filters[b]`` (arguments as ``F.conv2d``).

    ``x`` (B, C, H, W), ``filters`` (B, out, C/groups, kh, kw), ``bias`` (B, out) or None ->
    (B, out, H', W'). Fast path: one per-sample conv (:func:`per_sample_conv2d`).

    >>> dynamic_conv2d(torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 3, 3), padding=1).shape
    torch.Size([2, 6, 8, 8])
    """
    _check_kernel_conv(x, filters, bias, groups, "filters")
    return per_sample_conv2d(x, filters, bias, stride, padding, dilation, groups)


def dynamic_conv2d_reference(x: torch.Tensor, filters: torch.Tensor, bias: Optional[torch.Tensor] = None,
                             stride: _Size2 = 1, padding: _Padding = 0, dilation: _Size2 = 1,
                             groups: int = 1) -> torch.Tensor:
    """Plain reference of :func:`dynamic_conv2d`: a loop over the batch with ``F.conv2d``."""
    _check_kernel_conv(x, filters, bias, groups, "filters")
    outs = []
    for b in range(x.shape[0]):
        bias_b = None if bias is None else bias[b]
        outs.append(F.conv2d(x[b : b + 1], filters[b], bias_b, stride, padding, dilation, groups))
    return torch.cat(outs, 0)


class DynamicConv2d(_ConvLayer):
    """DFN dynamic convolution layer: applies generated per-sample filters (the filter-generating
    network is the caller's, it is task specific).

    Arguments as ``nn.Conv2d``; ``bias=True`` adds a learned static bias (out,) shared by all samples
    (zero-initialised), on top of the optional per-sample ``bias`` (B, out) given to ``forward``.
    ``forward(x (B, in, H, W), filters (B, out, in/groups, kh, kw), bias=None) -> (B, out, H', W')``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: _Size2, stride: _Size2 = 1,
                 padding: _Padding = 0, dilation: _Size2 = 1, groups: int = 1, bias: bool = False,
                 device=None, dtype=None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        self._make_bias(bias, out_channels, device=device, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    @property
    def filter_shape(self) -> tuple[int, int, int, int]:
        """Shape of one sample's filters: (out, in/groups, kh, kw)."""
        return (self.out_channels, self.in_channels // self.groups) + self.kernel_size

    def forward(self, x: torch.Tensor, filters: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        check_shape(x, "B,C,H,W", "x", C=self.in_channels)
        check_shape(filters, "B,out,in_per_group,kh,kw", "filters", out=self.out_channels,
                    in_per_group=self.in_channels // self.groups, kh=self.kernel_size[0], kw=self.kernel_size[1])
        out = dynamic_conv2d(x, filters, bias, self.stride, self.padding, self.dilation, self.groups)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out


# --------------------------------------------------------------------------------------------------
# dynamic local filtering (one filter per sample and position)


def _check_local(x: torch.Tensor, filters: torch.Tensor, kernel_size: int, dilation: int) -> bool:
    """Checks for local filtering; returns True when the filters are given per channel."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise InputError(f"kernel_size must be a positive odd integer (centred filter), got {kernel_size}")
    if dilation < 1:
        raise InputError(f"dilation must be >= 1, got {dilation}")
    s = check_shape(x, "B,C,H,W", "x")
    check_floating(x, "x")
    taps = kernel_size * kernel_size
    f = check_shape(filters, "B,F,H,W", "filters", B=s["B"], H=s["H"], W=s["W"])
    check_same(x, filters, "x and filters")
    if f["F"] == taps:
        return False
    if f["F"] == s["C"] * taps:
        return True
    raise InputError(
        f"filters must have k*k={taps} channels (shared by all channels) or C*k*k={s['C'] * taps} "
        f"(per channel) for kernel_size={kernel_size} and C={s['C']}, got {tuple(filters.shape)}"
    )


def dynamic_local_filter(
    x: torch.Tensor, filters: torch.Tensor, kernel_size: int, dilation: int = 1, softmax: bool = False
) -> torch.Tensor:
    """DFN dynamic local filtering: a k x k filter per sample and position (zero padding, stride 1).

    ``x`` (B, C, H, W); ``filters`` (B, k*k, H, W) shared by the channels or (B, C*k*k, H, W) per
    channel (index ``c*k*k + tap``, tap = i*k + j row-major) -> (B, C, H, W). ``softmax`` applies a
    softmax over the k*k taps of each position first. Fast path: accumulates the k*k shifted copies of
    the padded input times their tap weights (no k*k-times-larger intermediate).

    >>> f = torch.zeros(1, 9, 4, 4); f[:, 4] = 1  # centre tap only: identity
    >>> x = torch.randn(1, 3, 4, 4); torch.equal(dynamic_local_filter(x, f, 3), x)
    True
    """
    if torch.compiler.is_exporting():
        return dynamic_local_filter_reference(x, filters, kernel_size, dilation, softmax)
    per_channel = _check_local(x, filters, kernel_size, dilation)
    batch, channels, height, width = x.shape
    k, taps = kernel_size, kernel_size * kernel_size
    f = filters.reshape(batch, channels if per_channel else 1, taps, height, width)
    if softmax:
        f = f.softmax(dim=2)
    pad = dilation * (k - 1) // 2
    xp = F.pad(x, (pad, pad, pad, pad))
    # unbind, not f[:, :, t]: the backward of k*k selects would fill k*k zero tensors of f's full size
    # (quadratic in the taps); unbind's backward stacks the k*k gradients once
    tap = f.unbind(dim=2)
    out = xp[:, :, :height, :width] * tap[0]
    for t in range(1, taps):
        i, j = divmod(t, k)
        shifted = xp[:, :, i * dilation : i * dilation + height, j * dilation : j * dilation + width]
        out = torch.addcmul(out, shifted, tap[t])
    return out


def dynamic_local_filter_reference(
    x: torch.Tensor, filters: torch.Tensor, kernel_size: int, dilation: int = 1, softmax: bool = False
) -> torch.Tensor:
    """Plain reference of :func:`dynamic_local_filter`: unfold the k x k neighbourhoods, multiply, sum."""
    per_channel = _check_local(x, filters, kernel_size, dilation)
    batch, channels, height, width = x.shape
    taps = kernel_size * kernel_size
    f = filters.reshape(batch, channels if per_channel else 1, taps, height, width)
    if softmax:
        f = torch.softmax(f, dim=2)
    pad = dilation * (kernel_size - 1) // 2
    patches = F.unfold(x, kernel_size, dilation=dilation, padding=pad)  # (B, C*k*k, H*W), channel-major
    patches = patches.reshape(batch, channels, taps, height, width)
    return (patches * f).sum(dim=2)


class DynamicLocalFilter(nn.Module):
    """DFN dynamic local filtering layer (no parameters: the filters come from the caller's
    filter-generating network). ``forward(x (B, C, H, W), filters (B, k*k or C*k*k, H, W)) -> (B, C, H, W)``.

    DFN's video prediction uses ``softmax=True``; HDFNet's DepthDC uses per-channel filters, no softmax
    and dilations 1, 3, 5.
    """

    def __init__(self, kernel_size: int, dilation: int = 1, softmax: bool = False) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        if dilation < 1:
            raise ValueError(f"dilation must be >= 1, got {dilation}")
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.softmax = softmax

    def forward(self, x: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
        return dynamic_local_filter(x, filters, self.kernel_size, self.dilation, self.softmax)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, dilation={self.dilation}, softmax={self.softmax}"
