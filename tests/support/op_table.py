"""The operator case table behind tests/ops/test_contract.py: one ``Family`` per module of zoo/ops.

Each family lists small declarative cases for the checks every operator shares (CONTRIBUTING.md,
"Operator tests"); the contract runs every case, so a family only says *what* to run:

- ``reference``: the fast path equals the plain ``*_reference`` on random inputs of several shapes
  (odd, non-square, batch > 1), float32 and float64, within ``tol``;
- ``backward``: a hand-written backward equals autograd through the reference (where there is one);
- ``gradcheck``: ``torch.autograd.gradcheck`` in float64 on tiny inputs;
- ``meta``: the meta device gives the output shape, every parameter and buffer stays on meta;
- ``bfloat16``: a bfloat16 forward stays bfloat16, finite and close to the float32 answer;
- ``traced``: ``torch.compile`` (a backend name) or ``torch.export`` gives the eager / reference answer.

A family with no case for a check says why in ``missing``. Builders are functions, so importing the table
runs nothing. Family-specific tests (hand-worked values, paper facts, edge cases, error messages) stay in
tests/ops/test_<family>.py and may import the input helpers defined here.

benchmarks/op_cases/ describes the same operators at paper-sized settings for timing; the tests need tiny,
odd shapes instead and do not import benchmarks/, so the two tables share no code.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from zoo.ops.aspp import ASPP, aspp_reference, aspp_v2, aspp_v2_reference, atrous_conv2d
from zoo.ops.cac import ContextAdaptiveConv, cac_kernels, cac_kernels_reference, cac_weighting, cac_weighting_reference
from zoo.ops.cond_conv import CondConv2d, CondConvRouting, cond_conv2d, cond_conv2d_reference
from zoo.ops.context_module import ContextModule, context_module, context_module_reference
from zoo.ops.correlation import Correlation, correlation, correlation_reference
from zoo.ops.deform_conv import (
    DeformConv2d,
    ModulatedDeformConv2d,
    deform_conv2d,
    deform_conv2d_reference,
    modulated_deform_conv2d,
)
from zoo.ops.deform_ps_roi_pool import DeformPSRoIPool, deform_ps_roi_pool, deform_ps_roi_pool_reference
from zoo.ops.deform_roi_pool import DeformRoIPool, ModulatedDeformRoIPool, deform_roi_pool, deform_roi_pool_reference
from zoo.ops.dense_crf import DenseCRF, dense_crf, dense_crf_reference
from zoo.ops.depth_dc import DDPM, DepthDC
from zoo.ops.dmnet import DynamicConvModule, dynamic_depthwise_conv2d, dynamic_depthwise_conv2d_reference
from zoo.ops.dy_conv import DyConv2d, dy_conv2d, dy_conv2d_reference
from zoo.ops.dynamic_filter import (
    DynamicConv2d,
    DynamicLocalFilter,
    dynamic_conv2d,
    dynamic_conv2d_reference,
    dynamic_local_filter,
    dynamic_local_filter_reference,
    kernel_mixture_conv2d,
    kernel_mixture_conv2d_reference,
)
from zoo.ops.dynamic_mask_head import (
    DynamicMaskHead,
    aligned_bilinear,
    dynamic_mask_head,
    dynamic_mask_head_reference,
    dynamic_params_counts,
)
from zoo.ops.dynet import DyNetConv2d, dynet_conv2d, dynet_conv2d_reference
from zoo.ops.lsdfn import LSDFN, lsdfn, lsdfn_reference
from zoo.ops.multiscale import MultiScaleFusion, multiscale_fusion, multiscale_fusion_reference

F32, F64 = torch.float32, torch.float64
Tol = Mapping[str, float]


def tol(f32: tuple[float, float], f64: tuple[float, float]) -> dict[torch.dtype, Tol]:
    """``{dtype: {rtol, atol}}`` from ``(rtol, atol)`` pairs."""
    return {F32: dict(rtol=f32[0], atol=f32[1]), F64: dict(rtol=f64[0], atol=f64[1])}


DEFAULT_TOL = tol((1.3e-6, 1e-5), (1e-7, 1e-7))  # torch.testing.assert_close's own defaults


# --- the case types ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Call:
    """``fn(*args, **kwargs)``. ``modules``: what a dtype cast moves and the meta check inspects (default:
    ``fn`` itself when it is a module; ``()`` keeps a module out of the cast)."""

    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    modules: tuple[nn.Module, ...] | None = None

    def __call__(self) -> Any:
        return self.fn(*self.args, **self.kwargs)

    def owned_modules(self) -> tuple[nn.Module, ...]:
        if self.modules is not None:
            return self.modules
        return (self.fn,) if isinstance(self.fn, nn.Module) else ()

    def to(self, dtype: torch.dtype) -> Call:
        """Moves the modules (in place) and returns the call on floating tensors cast to ``dtype``."""
        for m in self.owned_modules():
            m.to(dtype)
        return replace(self, args=cast(self.args, dtype), kwargs=cast(dict(self.kwargs), dtype))


def cast(obj: Any, dtype: torch.dtype) -> Any:
    """Floating tensors (also inside lists, tuples and dicts) to ``dtype``; everything else unchanged."""
    if isinstance(obj, torch.Tensor):
        return obj.to(dtype) if obj.is_floating_point() else obj
    if isinstance(obj, (list, tuple)):
        return type(obj)(cast(o, dtype) for o in obj)
    if isinstance(obj, dict):
        return {k: cast(v, dtype) for k, v in obj.items()}
    return obj


class Pair(NamedTuple):
    """One comparison: ``fast()`` must equal ``reference()``; ``check(fast output)`` must hold if given."""

    label: str
    fast: Call
    reference: Call
    check: Callable[[Any], bool] | None = None


@dataclass(frozen=True)
class Reference:
    id: str
    pairs: Callable[[Any, torch.dtype], Sequence[Pair]]  # (setting, dtype) -> comparisons on fresh inputs
    settings: Sequence[Any]                              # shapes / arguments: odd, non-square, batch > 1
    tol: Mapping[torch.dtype, Tol]
    dtypes: tuple[torch.dtype, ...] = (F32, F64)


@dataclass(frozen=True)
class Backward:
    id: str
    build: Callable[[Any], tuple[Callable, Callable, tuple[torch.Tensor, ...]]]  # setting -> fast, reference, leaves
    settings: Sequence[Any]
    tol: Tol = field(default_factory=dict)
    loss: Callable[[torch.Tensor], torch.Tensor] | None = None  # default: sum of output * seeded N(0, 1) weights


@dataclass(frozen=True)
class Gradcheck:
    id: str
    call: Callable[[], Call]  # float64 tensors, the ones to check with requires_grad
    fast_mode: bool = False


@dataclass(frozen=True)
class Meta:
    id: str
    call: Callable[[], Call]
    shape: tuple[int, ...]
    context: bool = True  # built and run under ``with torch.device("meta")``; False: the builder passes device="meta"


@dataclass(frozen=True)
class BFloat16:
    id: str
    call: Callable[[], Call]  # in float32; the contract casts it
    rtol: float
    atol: float
    atol_of_max: bool = False  # atol is a fraction of max |expected|
    expected: Callable[[Call], Any] | None = None  # from the bfloat16 call; default: the float32 call's output


@dataclass(frozen=True)
class Traced:
    id: str
    how: str  # "export", or a torch.compile backend: "eager", "aot_eager", "inductor" (marked slow)
    call: Callable[[], Call]
    fullgraph: bool = True
    inputs: Callable[[], Sequence[tuple]] | None = None  # argument tuples to check (default: the call's own)
    expected: Callable[..., Any] | None = None           # args -> expected (default: the eager call)
    dynamic_shapes: Callable[[], Any] | None = None
    tol: Tol = field(default_factory=dict)
    slow: bool = False  # kept out of the default run (inductor cases always are)


CHECKS = ("reference", "gradcheck", "meta", "bfloat16", "traced")  # every family has cases or a reason


@dataclass(frozen=True)
class Family:
    name: str  # the module of zoo/ops
    reference: Sequence[Reference] = ()
    backward: Sequence[Backward] = ()
    gradcheck: Sequence[Gradcheck] = ()
    meta: Sequence[Meta] = ()
    bfloat16: Sequence[BFloat16] = ()
    traced: Sequence[Traced] = ()
    missing: Mapping[str, str] = field(default_factory=dict)  # check -> why it does not apply


def ident(value: Any) -> str:
    """A short test id for a setting: ``2x6x7x11``, ``heads=2,fusion=sum_sigmoid``, ``v2``."""
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if isinstance(value, dict):
        return ",".join(f"{k}={ident(v)}" for k, v in value.items()) or "defaults"
    if isinstance(value, (tuple, list)):
        if value and all(isinstance(v, int) for v in value):
            return "x".join(map(str, value))
        return "-".join(ident(v) for v in value)
    return str(value)


# --- shared helpers -----------------------------------------------------------------------------------
def seed(value: int = 0) -> None:
    """Seeds the CPU generator, all these tests use. (torch.manual_seed also queues a lazy seed for every
    accelerator backend, with a formatted stack each time: about 1 ms a call inside pytest.)"""
    torch.default_generator.manual_seed(value)


def randomise_norms(module: nn.Module, seed: int = 1) -> nn.Module:
    """Non-trivial BatchNorm / FrozenBatchNorm2d statistics and affine parameters, so that no norm is
    the identity (eval mode is what makes the running statistics count)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.modules.batchnorm._NormBase, FrozenBatchNorm2d)):
                c = m.running_mean.numel()
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(c, generator=g) * 0.1)
    return module


def _same_args(label: str, fast: Callable, reference: Callable, *args, check=None, **kwargs) -> Pair:
    return Pair(label, Call(fast, args, kwargs), Call(reference, args, kwargs), check)


def _requires_grad(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(t.requires_grad_() for t in tensors)


# --- aspp ---------------------------------------------------------------------------------------------
ASPP_TOL = tol((1e-5, 1e-5), (1e-12, 1e-12))


def aspp_v3(in_ch: int = 8, out_ch: int = 6, rates=(1, 2, 5), dtype=F32, **kw) -> ASPP:
    """A seeded v3 ASPP with non-trivial norms."""
    seed()
    return randomise_norms(ASPP(in_ch, out_ch, rates, mode="v3", dtype=dtype, **kw))


def _aspp_v2_pairs(shape, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g, dtype=dtype)
    rates = (1, 3, 6, 12)  # 6 and 12 hit the degenerate shortcuts on the small maps
    ws = [torch.randn(5, shape[1], 3, 3, generator=g, dtype=dtype) for _ in rates]
    bs = [torch.randn(5, generator=g, dtype=dtype) for _ in rates]
    return [_same_args("aspp_v2", aspp_v2, aspp_v2_reference, x, ws, bs, rates)]


def _aspp_v3_pairs(shape, dtype):
    m = aspp_v3(in_ch=shape[1], dtype=dtype).eval()
    x = torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(2))
    return [Pair("ASPP v3 eval", Call(m, (x,)), Call(aspp_reference, (m, x)))]


def _atrous_pairs(setting, dtype):
    hw, rate = setting
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, *hw, generator=g, dtype=dtype)
    w = torch.randn(4, 3, 3, 3, generator=g, dtype=dtype)
    b = torch.randn(4, generator=g, dtype=dtype)
    return [Pair("atrous_conv2d == conv2d", Call(atrous_conv2d, (x, w, b, rate)),
                 Call(F.conv2d, (x, w, b), dict(padding=rate, dilation=rate)))]


def _aspp_v2_grad():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 2, 3, 4, dtype=F64, generator=g)
    w0, w1 = (torch.randn(1, 2, 3, 3, dtype=F64, generator=g) for _ in range(2))
    b = torch.randn(1, dtype=F64, generator=g)
    return Call(lambda x, w0, w1, b: aspp_v2(x, [w0, w1], [b, b], (1, 4)), _requires_grad(x, w0, w1, b))


ASPP_FAMILY = Family(
    "aspp",
    reference=[
        Reference("v2", _aspp_v2_pairs, [(1, 6, 9, 9), (2, 6, 7, 11), (3, 6, 4, 13), (1, 6, 2, 3)], ASPP_TOL),
        Reference("v3-eval", _aspp_v3_pairs, [(1, 8, 9, 9), (2, 8, 5, 12), (3, 8, 3, 4)], ASPP_TOL),
        Reference("atrous_conv2d", _atrous_pairs, [((4, 4), 4), ((3, 9), 5), ((9, 2), 2), ((6, 6), 2)], ASPP_TOL),
    ],
    gradcheck=[
        Gradcheck("v2", _aspp_v2_grad),
        Gradcheck("v3", lambda: Call(aspp_v3(2, 2, (1, 3), dtype=F64).eval(),
                                     _requires_grad(torch.randn(2, 2, 2, 3, dtype=F64)))),
    ],
    meta=[Meta(mode, lambda mode=mode: Call(ASPP(2048, 21, mode=mode, device="meta").eval(),
                                            (torch.empty(2, 2048, 65, 65, device="meta"),)),
               (2, 21, 65, 65), context=False) for mode in ("v2", "v3")],
    bfloat16=[BFloat16(mode, lambda mode=mode: Call(ASPP(8, 4, (1, 2), mode=mode).eval(), (torch.randn(1, 8, 6, 5),)),
                       rtol=0.05, atol=0.05) for mode in ("v2", "v3")],
    traced=[Traced(
        "v3-dynamic-size", "export", lambda: Call(aspp_v3(rates=(2, 6)).eval(), (torch.randn(2, 8, 9, 9),)),
        # the second size has degenerate rates in eager mode
        inputs=lambda: [(torch.randn(2, 8, 9, 9),), (torch.randn(2, 8, 4, 13),)],
        dynamic_shapes=lambda: ({2: torch.export.Dim("h", min=2, max=64), 3: torch.export.Dim("w", min=2, max=64)},),
        tol=dict(rtol=1e-5, atol=1e-5))],
)


# --- cac ----------------------------------------------------------------------------------------------
CAC_TOL = tol((1e-4, 1e-5), (1e-10, 1e-12))


def _cac_module_reference(m: ContextAdaptiveConv, x: torch.Tensor) -> torch.Tensor:
    """The module written out with the reference functionals and an explicit per-head/per-set BN."""
    b, c, h, w = x.shape
    s, n, heads = m.kernel_size, m.num_kernel_sets, m.heads
    kernels = torch.empty(b, heads, len(m.dilations), c, s, s, dtype=x.dtype)
    key, query = m.key_conv(x), m.query_conv(x)
    for head in range(heads):
        d = cac_kernels_reference(key[:, head * c: (head + 1) * c], query[:, head * n * s * s: (head + 1) * n * s * s])
        for i in range(len(m.dilations)):
            j = i if m.separate_kernels else 0
            dk = d[:, :, j * s * s: (j + 1) * s * s].reshape(b, c, s, s)
            if m.kernel_bn is not None:  # eval-mode BN of channel (head, set, c)
                bn = m.kernel_bn
                idx = slice((head * n + j) * c, (head * n + j + 1) * c)
                scale = bn.weight[idx] / torch.sqrt(bn.running_var[idx] + bn.eps)
                mean, shift = bn.running_mean[idx].view(1, c, 1, 1), bn.bias[idx].view(1, c, 1, 1)
                dk = (dk - mean) * scale.view(1, c, 1, 1) + shift
            kernels[:, head, i] = dk
    out = x * cac_weighting_reference(x, kernels, m.dilations, m.fusion)
    if m.global_conv is not None:
        out = out + F.relu(m.global_conv(x.mean((2, 3), keepdim=True)))
    return out


def _cac(channels: int, dtype=F32, **kwargs) -> ContextAdaptiveConv:
    seed()
    return randomise_norms(ContextAdaptiveConv(channels, dtype=dtype, **kwargs)).eval()


def _cac_kernels_pairs(shape, dtype):
    key = torch.randn(shape, dtype=dtype)
    query = torch.randn(shape[0], 9, *shape[2:], dtype=dtype) * 3
    return [_same_args("cac_kernels", cac_kernels, cac_kernels_reference, key, query)]


def _cac_weighting_pairs(setting, dtype):
    fusion, shape, heads, s = setting
    x = torch.randn(shape, dtype=dtype)
    kernels = torch.randn(shape[0], heads, 3, shape[1], s, s, dtype=dtype)
    return [_same_args("cac_weighting", cac_weighting, cac_weighting_reference, x, kernels, (1, 3, 5), fusion)]


def _cac_module_pairs(setting, dtype):
    kwargs, shape = setting
    m = _cac(6, dtype, **kwargs)
    x = torch.randn(shape, dtype=dtype)
    return [Pair("ContextAdaptiveConv", Call(m, (x,)), Call(_cac_module_reference, (m, x)))]


def _cac_weighting_grad(fusion):
    x = torch.randn(1, 2, 4, 5, dtype=F64)
    kernels = torch.randn(1, 2, 3, 2, 3, 3, dtype=F64)
    return Call(lambda a, k: cac_weighting(a, k, (1, 3, 5), fusion), _requires_grad(x, kernels))


CAC_FAMILY = Family(
    "cac",
    reference=[
        Reference("kernels", _cac_kernels_pairs, [(1, 4, 7, 9), (3, 2, 6, 5)], CAC_TOL),
        Reference("weighting", _cac_weighting_pairs,
                  [(fusion, shape, heads, s) for fusion in ("sigmoid_sum", "sum_sigmoid")
                   for shape, heads, s in [((1, 3, 7, 9), 1, 3), ((2, 4, 11, 6), 2, 3), ((3, 2, 8, 8), 3, 5)]],
                  CAC_TOL),
        Reference("module", _cac_module_pairs,
                  [({}, (2, 6, 9, 7)), (dict(heads=2, fusion="sum_sigmoid"), (1, 6, 10, 13)),
                   (dict(separate_kernels=False, heads=2), (3, 6, 7, 7))], CAC_TOL),
    ],
    gradcheck=[
        Gradcheck("kernels", lambda: Call(cac_kernels, _requires_grad(torch.randn(2, 2, 3, 4, dtype=F64),
                                                                      torch.randn(2, 4, 3, 4, dtype=F64)))),
        *(Gradcheck(f"weighting-{fusion}", lambda fusion=fusion: _cac_weighting_grad(fusion))
          for fusion in ("sigmoid_sum", "sum_sigmoid")),
    ],
    meta=[Meta("module", lambda: Call(ContextAdaptiveConv(16, heads=2), (torch.empty(2, 16, 9, 9),)), (2, 16, 9, 9))],
    bfloat16=[BFloat16("module", lambda: Call(_cac(8, heads=2), (torch.randn(2, 8, 9, 7),)),
                       rtol=0.05, atol=0.05, atol_of_max=True)],
    traced=[Traced("module", "aot_eager", lambda: Call(_cac(6, heads=2), (torch.randn(2, 6, 7, 9),)))],
)


# --- kernel mixtures: dynamic_filter's kernel_mixture_conv2d and its wrappers CondConv, DyNet, DyConv ---
# (B, C, out, H, W, (kh, kw), stride, padding, dilation, groups, E, temperature for DyConv)
MIXTURE_CASES = [
    (1, 3, 5, 7, 7, (3, 3), 1, 1, 1, 1, 4, 1.0),
    (3, 4, 6, 9, 6, (3, 1), 2, (1, 0), 1, 2, 3, 30.0),
    (2, 6, 3, 11, 8, (3, 3), 1, 2, 2, 3, 8, 0.5),
    (4, 4, 4, 5, 13, (1, 1), 1, 0, 1, 4, 1, 1.0),
]


class _Mixture(NamedTuple):
    fast: Callable
    reference: Callable
    coefficients: Callable[..., torch.Tensor]  # (B, E) -> what the op mixes with
    extra: Callable[[float], dict]             # temperature -> extra keyword arguments


MIXTURES = {
    "kernel_mixture": _Mixture(kernel_mixture_conv2d, kernel_mixture_conv2d_reference, torch.randn, lambda tau: {}),
    "cond_conv": _Mixture(cond_conv2d, cond_conv2d_reference, torch.rand, lambda tau: {}),  # routing in (0, 1)
    "dynet": _Mixture(dynet_conv2d, dynet_conv2d_reference, lambda *s, **k: 2 * torch.randn(*s, **k),
                      lambda tau: {}),  # unconstrained: negative and > 1
    "dy_conv": _Mixture(dy_conv2d, dy_conv2d_reference, lambda *s, **k: 3 * torch.randn(*s, **k),
                        lambda tau: {"temperature": tau}),  # attention logits
}


def mixture_inputs(case, coefficients: Callable[..., torch.Tensor], dtype=F32):
    """x, coefficients (B, E), bank (E, out, C/groups, kh, kw), bias (E, out) and the conv keywords."""
    b, c, out, h, w, k, stride, padding, dilation, groups, e, _ = case
    x = torch.randn(b, c, h, w, dtype=dtype)
    coeff = coefficients(b, e, dtype=dtype)
    bank = torch.randn(e, out, c // groups, *k, dtype=dtype)
    bias = torch.randn(e, out, dtype=dtype)
    return x, coeff, bank, bias, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


def _mixture_reference(op: str) -> Reference:
    """The fast path (one matmul + one grouped conv) equals the per-sample loop, with and without bias."""
    mixture = MIXTURES[op]

    def pairs(case, dtype):
        x, coeff, bank, bias, kw = mixture_inputs(case, mixture.coefficients, dtype)
        kw.update(mixture.extra(case[-1]))
        return [_same_args("bias", mixture.fast, mixture.reference, x, coeff, bank, bias, **kw),
                _same_args("no bias", mixture.fast, mixture.reference, x, coeff, bank, None, **kw)]

    return Reference("functional", pairs, MIXTURE_CASES, DEFAULT_TOL)


def _mixture_gradcheck(op: str) -> Gradcheck:
    mixture = MIXTURES[op]

    def call():
        kw = dict(stride=(1, 2), padding=1, dilation=1, groups=2, **mixture.extra(2.0))
        args = (torch.randn(2, 2, 4, 5), mixture.coefficients(2, 3), torch.randn(3, 2, 1, 3, 3), torch.randn(3, 2))
        return Call(lambda *a: mixture.fast(*a, **kw), _requires_grad(*(a.double() for a in args)))

    return Gradcheck("functional", call, fast_mode=True)


# --- cond_conv ----------------------------------------------------------------------------------------
def _cond_conv_block(*shape, **layer_kw) -> Call:
    layer, routing = CondConv2d(4, 6, 3, padding=1, **layer_kw), CondConvRouting(4, 3)
    return Call(lambda x: layer(x, routing(x)), (torch.randn(*shape),), modules=(layer, routing))


def _cond_conv_grad():
    layer = CondConv2d(2, 2, 3, stride=(1, 2), padding=1, groups=2, bias=True, num_experts=3).double()
    routing = CondConvRouting(2, 3).double()
    return Call(lambda x: layer(x, routing(x)), _requires_grad(torch.randn(2, 2, 4, 5, dtype=F64)),
                modules=(layer, routing))


def _cond_conv_meta():
    layer, routing = CondConv2d(4, 6, 3, padding=1, bias=True, num_experts=4), CondConvRouting(4, 4, dropout=0.2)
    return Call(lambda x: layer(x, routing(x)), (torch.randn(2, 4, 7, 8),), modules=(layer, routing))


COND_CONV_FAMILY = Family(
    "cond_conv",
    reference=[_mixture_reference("cond_conv")],
    gradcheck=[_mixture_gradcheck("cond_conv"), Gradcheck("through-routing", _cond_conv_grad, fast_mode=True)],
    meta=[Meta("with-routing", _cond_conv_meta, (2, 6, 7, 8))],
    bfloat16=[BFloat16("with-routing", lambda: _cond_conv_block(2, 4, 7, 8, bias=True, num_experts=3),
                       rtol=0.05, atol=0.1)],
    traced=[Traced("with-routing", "eager", lambda: _cond_conv_block(2, 4, 7, 8, groups=2, num_experts=3))],
)


# --- context_module -------------------------------------------------------------------------------------
CONTEXT_TOL = tol((1e-4, 1e-4), (1e-10, 1e-10))


def randomise_context_module(m: ContextModule, seed: int = 0) -> ContextModule:
    """He-normal weights and small biases instead of the identity initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for conv in m.layers():
            fan_in = conv.weight[0].numel()
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * 0.1)
    return m


def _context_pairs(setting, dtype):
    variant, shape = setting
    m = randomise_context_module(ContextModule(shape[1], variant, dtype=dtype))
    x = torch.randn(shape, dtype=dtype)
    w, b = [c.weight for c in m.layers()], [c.bias for c in m.layers()]
    return [Pair("ContextModule", Call(m, (x,)), Call(context_module_reference, (x, w, b))),
            _same_args("context_module", context_module, context_module_reference, x, w, b)]


def _context_grad():
    m = randomise_context_module(ContextModule(1, dtype=F64))
    w = [c.weight.detach().clone() for c in m.layers()]
    b = [c.bias.detach().clone() for c in m.layers()]
    x = torch.randn(1, 1, 6, 5, dtype=F64)
    return Call(lambda x, *p: context_module(x, p[:8], p[8:]), _requires_grad(x, *w, *b))


CONTEXT_MODULE_FAMILY = Family(
    "context_module",
    reference=[Reference("basic-and-large", _context_pairs,
                         [("basic", (1, 3, 9, 9)), ("basic", (3, 3, 7, 12)), ("large", (2, 2, 11, 6))], CONTEXT_TOL)],
    gradcheck=[Gradcheck("functional", _context_grad)],
    meta=[Meta("large", lambda: Call(ContextModule(4, "large"), (torch.empty(2, 4, 9, 9),)), (2, 4, 9, 9))],
    bfloat16=[BFloat16("basic", lambda: Call(randomise_context_module(ContextModule(3)), (torch.rand(2, 3, 9, 7),)),
                       rtol=0.05, atol=0.1, atol_of_max=True)],
    traced=[Traced("basic", "export", lambda: Call(ContextModule(2).eval(), (torch.rand(1, 2, 8, 8),)))],
)


# --- correlation ----------------------------------------------------------------------------------------
def feature_pair(shape, dtype=F32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype), torch.randn(shape, generator=g, dtype=dtype)


def _correlation_pairs(setting, dtype):
    shape, md, stride, kernel_size = setting
    f1, f2 = feature_pair(shape, dtype)
    return [_same_args("correlation", correlation, correlation_reference, f1, f2, md, stride, kernel_size)]


def _flownetc_pairs(normalize, dtype):
    f1, f2 = feature_pair((2, 16, 13, 30), dtype)
    return [_same_args("FlowNetC setting", correlation, correlation_reference, f1, f2, 20, 2, normalize=normalize)]


def _correlation_grad(shape, md, stride, kernel_size):
    return Call(lambda a, b: correlation(a, b, md, stride, kernel_size), _requires_grad(*feature_pair(shape, F64)))


def _meta_features() -> torch.Tensor:
    return torch.empty(2, 256, 48, 64, device="meta")


def _correlation_exported_inputs():
    return [feature_pair((2, 4, 6, 7), seed=1)]


CORRELATION_FAMILY = Family(
    "correlation",
    reference=[
        Reference("random", _correlation_pairs,
                  [(shape, md, stride, k)
                   for shape in [(1, 3, 5, 7), (2, 4, 6, 5), (3, 2, 9, 4), (1, 5, 1, 1), (2, 1, 3, 2)]
                   for md, stride, k in [(0, 1, 1), (1, 1, 1), (4, 2, 1), (5, 2, 1), (3, 3, 1), (2, 1, 3), (4, 2, 3)]],
                  tol((1e-5, 1e-5), (1e-12, 1e-12))),
        Reference("flownetc", _flownetc_pairs, [True, False], {F32: dict(rtol=1e-5, atol=1e-5)}, dtypes=(F32,)),
    ],
    # fast_mode compares random vector-Jacobian products with finite differences (one backward, not 1 per output)
    gradcheck=[*(Gradcheck(f"md{md}-s{s}-k{k}", lambda md=md, s=s, k=k: _correlation_grad((2, 2, 4, 5), md, s, k),
                           fast_mode=True) for md, s, k in [(2, 1, 1), (3, 2, 1), (2, 2, 3)]),
               Gradcheck("full-jacobian", lambda: _correlation_grad((1, 2, 3, 4), 2, 2, 1))],
    meta=[
        Meta("Correlation", lambda: Call(Correlation(), (_meta_features(),) * 2),
             (2, 441, 48, 64), context=False),
        Meta("functional-k3", lambda: Call(correlation, (_meta_features()[..., :7],) * 2 + (2, 1, 3)),
             (2, 25, 48, 7), context=False),
    ],
    bfloat16=[BFloat16("functional", lambda: Call(correlation, (*feature_pair((2, 16, 9, 12)), 6, 2)),
                       rtol=2e-2, atol=2e-2,
                       expected=lambda low: correlation_reference(low.args[0].float(), low.args[1].float(), 6, 2))],
    traced=[
        Traced("module", "export", lambda: Call(Correlation(3, 2), feature_pair((2, 4, 6, 7))),
               inputs=_correlation_exported_inputs, expected=lambda a, b: correlation_reference(a, b, 3, 2),
               tol=dict(rtol=1e-5, atol=1e-5)),
        Traced("module", "inductor", lambda: Call(Correlation(3, 2), feature_pair((2, 4, 6, 7))),
               expected=lambda a, b: correlation_reference(a, b, 3, 2), tol=dict(rtol=1e-5, atol=1e-5)),
    ],
)


# --- deform_conv ----------------------------------------------------------------------------------------
DEFORM_CONV_CONFIGS = [  # b, c_in, h, w, c_out, kernel, stride, padding, dilation, groups, deform_groups
    (1, 3, 5, 5, 2, (3, 3), 1, 1, 1, 1, 1),
    (2, 4, 7, 5, 6, (3, 3), 1, 1, 1, 2, 2),
    (2, 6, 9, 8, 4, (3, 3), 2, 2, 2, 1, 3),
    (3, 4, 6, 7, 4, (2, 3), 1, 0, 1, 4, 1),
    (1, 8, 5, 11, 4, (1, 1), 1, 0, 1, 2, 4),
]


def deform_conv_inputs(b, c_in, h, w, c_out, k=(3, 3), s=1, p=1, d=1, groups=1, dg=1, dtype=F32, scale=2.0):
    """x, offset (scaled N(0, 1)), mask in [0, 1), weight, bias, (stride, padding, dilation); seeded by shape."""
    g = torch.Generator().manual_seed(b * 1000 + c_in * 100 + h * 10 + w + groups + 7 * dg)
    ho = (h + 2 * p - d * (k[0] - 1) - 1) // s + 1
    wo = (w + 2 * p - d * (k[1] - 1) - 1) // s + 1
    taps = k[0] * k[1]
    x = torch.randn(b, c_in, h, w, generator=g, dtype=dtype)
    weight = torch.randn(c_out, c_in // groups, *k, generator=g, dtype=dtype)
    bias = torch.randn(c_out, generator=g, dtype=dtype)
    offset = torch.randn(b, 2 * dg * taps, ho, wo, generator=g, dtype=dtype) * scale
    mask = torch.rand(b, dg * taps, ho, wo, generator=g, dtype=dtype)
    return x, offset, mask, weight, bias, (s, p, d)


def _deform_pairs(cfg, dtype):
    b, c_in, h, w, c_out, k, s, p, d, groups, dg = cfg
    x, off, mask, wt, bias, _ = deform_conv_inputs(b, c_in, h, w, c_out, k, s, p, d, groups, dg, dtype)
    return [Pair("deform_conv2d", Call(deform_conv2d, (x, off, wt, bias, s, p, d)),
                 Call(deform_conv2d_reference, (x, off, wt, bias, s, p, d))),
            Pair("modulated_deform_conv2d", Call(modulated_deform_conv2d, (x, off, mask, wt, None, s, p, d)),
                 Call(deform_conv2d_reference, (x, off, wt, None, s, p, d), dict(mask=mask)))]


def _deform_backward(_):
    x, off, mask, wt, bias, (s, p, d) = deform_conv_inputs(2, 4, 6, 5, 4, groups=2, dg=2)
    return (lambda *a: modulated_deform_conv2d(*a, bias, s, p, d),
            lambda x_, o, m, w_: deform_conv2d_reference(x_, o, w_, bias, s, p, d, mask=m),
            (x, off, mask, wt))


def _deform_grad_modulated():
    x, off, mask, w, b, (s, p, d) = deform_conv_inputs(1, 2, 4, 3, 2, dtype=F64, dg=2, scale=0.7)
    return Call(lambda *a: modulated_deform_conv2d(*a, s, p, d), _requires_grad(x, off, mask, w, b))


def _deform_grad_strided():
    x, off, _, w, _, (s, p, d) = deform_conv_inputs(1, 2, 5, 4, 2, s=2, dtype=F64, scale=0.7)
    return Call(lambda a, o, w_: deform_conv2d(a, o, w_, None, s, p, d), _requires_grad(x, off, w))


def _deform_module(cls, *shape, deform_groups=1, offsets=True):
    m = cls(4, 4, 3, padding=1, deform_groups=deform_groups)
    if offsets:  # away from the zero-initialised offset conv
        with torch.no_grad():
            m.conv_offset.weight.normal_(0, 0.1)
    return Call(m.eval(), (torch.randn(*shape),))


DEFORM_CONV_FAMILY = Family(
    "deform_conv",
    reference=[Reference("v1-and-modulated", _deform_pairs, DEFORM_CONV_CONFIGS, tol((1e-4, 1e-4), (1e-10, 1e-10)))],
    backward=[Backward("modulated", _deform_backward, ["2x4x6x5-groups2-dg2"], dict(atol=1e-3, rtol=1e-4),
                       loss=lambda y: (y ** 2).sum())],
    gradcheck=[Gradcheck("modulated", _deform_grad_modulated, fast_mode=True),
               Gradcheck("v1-strided", _deform_grad_strided, fast_mode=True)],
    meta=[Meta(cls.__name__, lambda cls=cls: Call(cls(8, 4, 3, stride=2, padding=1, deform_groups=2),
                                                  (torch.empty(2, 8, 9, 10),)), (2, 4, 5, 5))
          for cls in (DeformConv2d, ModulatedDeformConv2d)],
    bfloat16=[BFloat16(cls.__name__, lambda cls=cls: _deform_module(cls, 1, 4, 6, 5), rtol=0.05, atol=0.1)
              for cls in (DeformConv2d, ModulatedDeformConv2d)],
    traced=[
        *(Traced(cls.__name__, "export", lambda cls=cls: _deform_module(cls, 2, 4, 7, 5, deform_groups=2))
          for cls in (DeformConv2d, ModulatedDeformConv2d)),
        Traced("ModulatedDeformConv2d", "aot_eager",
               lambda: _deform_module(ModulatedDeformConv2d, 1, 4, 6, 6, offsets=False)),
        Traced("ModulatedDeformConv2d", "inductor", lambda: _deform_module(ModulatedDeformConv2d, 1, 4, 6, 6),
               fullgraph=False, tol=dict(atol=1e-5, rtol=1e-5)),  # ~25 s of C++ compilation on 2 cores
    ],
)


# --- deform_roi_pool ------------------------------------------------------------------------------------
# RoIs in image coordinates (spatial_scale 0.25): inside, partly outside, tiny (< 1 bin), larger than the map.
ROIS = [[0, 1.0, 2.0, 30.0, 20.0], [1, -5.0, -3.0, 12.0, 40.0], [1, 3.3, 4.4, 5.5, 5.0], [0, 0.0, 0.0, 45.0, 43.0]]


def roi_pool_inputs(n=2, c=3, h=11, w=9, dtype=F32, out=(3, 4), seed=0):
    """x (n, c, h, w), the ROIS (image index clamped to n - 1), offsets (K, 2, *out)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g, dtype=dtype)
    rois = torch.tensor(ROIS, dtype=dtype)
    rois[:, 0] = rois[:, 0].clamp(max=n - 1)
    offset = torch.randn(len(ROIS), 2, *out, generator=g, dtype=dtype)
    return x, rois, offset


def _roi_pairs(setting, dtype):
    sampling_ratio, out = setting
    x, rois, offset = roi_pool_inputs(dtype=dtype, out=out)
    return [_same_args(f"offset={off is not None} gamma={gamma}", deform_roi_pool, deform_roi_pool_reference,
                        x, rois, off, out, 0.25, sampling_ratio, gamma)
            for off, gamma in ((None, 0.1), (offset, 0.1), (offset, 0.4))]


def _roi_grad(sampling_ratio):
    x, rois, offset = roi_pool_inputs(n=2, c=2, h=6, w=5, dtype=F64, out=(2, 2), seed=1)
    rois = rois[:3]
    offset = offset[:3] * 0.5
    return Call(lambda a, o: deform_roi_pool(a, rois, o, 2, 0.25, sampling_ratio), _requires_grad(x, offset))


def _roi_module():
    x, rois, _ = roi_pool_inputs(out=(7, 7))
    m = ModulatedDeformRoIPool(7, 3, 32, spatial_scale=0.25, sampling_ratio=2).eval()
    with torch.no_grad():
        m.offset_fc[4].weight.normal_(0, 0.01)
    return Call(m, (x, rois))


DEFORM_ROI_POOL_FAMILY = Family(
    "deform_roi_pool",
    reference=[Reference("random", _roi_pairs, [(sr, out) for sr in (0, 1, 2) for out in ((3, 4), (2, 2))],
                         tol((1e-5, 1e-5), (1e-12, 1e-12)))],
    # The adaptive grid runs up to 6 x 6 samples per bin here, so check it with random projections.
    gradcheck=[*(Gradcheck(f"sampling_ratio{sr}", lambda sr=sr: _roi_grad(sr), fast_mode=sr <= 0) for sr in (0, 2))],
    meta=[*(Meta(cls.__name__, lambda cls=cls: Call(cls(7, 4, 32, spatial_scale=0.25, sampling_ratio=2),
                                                    (torch.empty(2, 4, 10, 12), torch.empty(5, 5))), (5, 4, 7, 7))
            for cls in (DeformRoIPool, ModulatedDeformRoIPool))],
    # bf16 rounds the RoI corners too
    bfloat16=[BFloat16("ModulatedDeformRoIPool", _roi_module, rtol=0.05, atol=0.1)],
    traced=[Traced("ModulatedDeformRoIPool", "export", _roi_module),
            Traced("functional", "aot_eager",
                   lambda: Call(deform_roi_pool, (*roi_pool_inputs(), (3, 4), 0.25, 2)))],
)


# --- deform_ps_roi_pool ---------------------------------------------------------------------------------
def ps_roi_pool_inputs(n=2, d=6, g=3, h=11, w=9, classes=1, part=3, dtype=F32, seed=0):
    """Deformable PS RoI pooling: score maps x (n, d*g*g, h, w), the ROIS (image index clamped to n - 1) and
    offsets (K, 2*classes, part, part)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d * g * g, h, w, generator=gen, dtype=dtype)
    rois = torch.tensor(ROIS, dtype=dtype)
    rois[:, 0] = rois[:, 0].clamp(max=n - 1)
    offset = torch.randn(len(ROIS), 2 * classes, part, part, generator=gen, dtype=dtype)
    return x, rois, offset


# (n, h, w, group_size G, pooled_size P, part_size T, sample_per_part S, offset classes M), 6 output channels
PS_SETTINGS = [(2, 11, 9, 3, 3, 3, 2, 1), (1, 8, 8, 2, 3, 2, 3, 2), (2, 7, 12, 3, 3, 3, 1, 6)]


def _ps_pairs(setting, dtype):
    n, h, w, g, p, t, s, m = setting
    x, rois, offset = ps_roi_pool_inputs(n, 6, g, h, w, m, t, dtype)
    return [_same_args(f"offset={off is not None} trans_std={std}", deform_ps_roi_pool, deform_ps_roi_pool_reference,
                        x, rois, off, g, p, t, s, std, 0.25)
            for off, std in ((None, 0.1), (offset, 0.1), (offset, 0.5))]


def _ps_grad():
    x, rois, offset = ps_roi_pool_inputs(n=2, d=2, g=2, h=5, w=4, classes=2, part=2, dtype=F64, seed=1)
    rois = rois[:3]
    return Call(lambda a, o: deform_ps_roi_pool(a, rois, o, 2, None, None, 2, 0.3, 0.25),
                _requires_grad(x, offset[:3]))


def _ps_module():
    x, rois, _ = ps_roi_pool_inputs(d=4, g=3, h=11, w=9)
    m = DeformPSRoIPool(5, 4, 3, sample_per_part=2, spatial_scale=0.25, offset_classes=2).eval()
    with torch.no_grad():
        m.conv_offset.weight.normal_(0, 0.3)
    return Call(m, (x, rois, torch.randn(2, 5, 11, 9)))


DEFORM_PS_ROI_POOL_FAMILY = Family(
    "deform_ps_roi_pool",
    reference=[Reference("random", _ps_pairs, PS_SETTINGS, tol((1e-5, 1e-5), (1e-12, 1e-12)))],
    gradcheck=[Gradcheck("functional", _ps_grad)],
    meta=[Meta("DeformPSRoIPool", lambda: Call(DeformPSRoIPool(16, 3, 7, spatial_scale=0.25, offset_classes=3),
                                               (torch.empty(2, 147, 10, 12), torch.empty(5, 5),
                                                torch.empty(2, 16, 10, 12))), (5, 3, 7, 7))],
    # bf16 rounds the RoI corners too
    bfloat16=[BFloat16("DeformPSRoIPool", _ps_module, rtol=0.05, atol=0.1)],
    traced=[Traced("DeformPSRoIPool", "export", _ps_module),
            Traced("functional", "aot_eager",
                   lambda: Call(deform_ps_roi_pool, (*ps_roi_pool_inputs(), 3, None, None, 2, 0.1, 0.25)))],
)


# --- dense_crf ------------------------------------------------------------------------------------------
def crf_inputs(shape, dtype=F32, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (B, K, H, W) ~ 2 N(0, 1) and an image (B, channels, H, W) in 0..255."""
    b, k, h, w = shape
    return torch.randn(b, k, h, w, dtype=dtype) * 2, torch.rand(b, channels, h, w, dtype=dtype) * 255


def _crf_pairs(setting, dtype):
    shape, options = setting
    logits, image = crf_inputs(shape, dtype)
    return [Pair("DenseCRF", Call(DenseCRF(**options), (logits, image)),
                 Call(dense_crf_reference, (logits, image), options)),
            _same_args("dense_crf", dense_crf, dense_crf_reference, logits, image, **options)]


_CRF_SMALL = dict(iterations=3, bi_weight=5.0, bi_xy_std=4.0, bi_rgb_std=40.0, bi_radius=2, bi_dilation=2)

DENSE_CRF_FAMILY = Family(
    "dense_crf",
    reference=[Reference("functional", _crf_pairs, [
        ((1, 3, 7, 9), dict(bi_radius=2, bi_dilation=2)),
        ((2, 4, 9, 6), dict(bi_radius=10, bi_xy_std=5.0, bi_rgb_std=30.0)),                  # the whole image
        ((3, 2, 5, 8), dict(normalization="none", bi_xy_std=3.0, bi_rgb_std=20.0, pos_xy_std=0.7, iterations=4)),
        ((2, 5, 8, 11), dict(bi_weight=40.0, bi_xy_std=67.0, bi_rgb_std=8.0, bi_radius=3, bi_dilation=3)),
        ((1, 2, 6, 7), dict(pos_weight=0.0)),
    ], tol((5e-4, 5e-4), (1e-10, 1e-10)))],  # float32: ten iterations of sums in a different order
    gradcheck=[Gradcheck("logits-and-image", lambda: Call(lambda lg, im: dense_crf(lg, im, **_CRF_SMALL),
                                                          _requires_grad(*crf_inputs((1, 2, 4, 5), F64))))],
    meta=[Meta("module", lambda: Call(DenseCRF(**_CRF_SMALL), crf_inputs((2, 3, 9, 7))), (2, 3, 9, 7))],
    bfloat16=[BFloat16("module", lambda: Call(DenseCRF(**_CRF_SMALL), crf_inputs((1, 3, 9, 7))),
                       rtol=0.05, atol=0.05)],
    traced=[Traced("module", "export", lambda: Call(DenseCRF(**_CRF_SMALL), crf_inputs((1, 3, 9, 7)))),
            Traced("module", "eager", lambda: Call(DenseCRF(**_CRF_SMALL), crf_inputs((1, 3, 9, 7))))],
)


# --- depth_dc -------------------------------------------------------------------------------------------
SMALL_TOL = tol((1e-4, 1e-5), (1e-10, 1e-12))  # cac, depth_dc, dmnet, dynamic_mask_head


def _depth_dc_reference(m: DepthDC, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """HDFNet's DepthDC3x3 forward: generate kernels, unfold-multiply-sum, fuse."""
    return m.fuse(dynamic_local_filter_reference(x, m.generate_kernel(y), m.kernel_size, m.dilation))


def _ddpm_reference(m: DDPM, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = m.down_input(x)
    outs = [_depth_dc_reference(getattr(m, f"branch_{d}"), x, y) for d in m.dilations]
    return m.fuse(torch.cat((x, *outs), 1))


def _seeded_eval(cls, *args, **kwargs) -> nn.Module:
    """``cls(*args, **kwargs)`` after seeding, with random norms, in eval mode."""
    seed()
    return randomise_norms(cls(*args, **kwargs)).eval()


def _depth_dc_pairs(setting, dtype):
    dilation, (b, h, w) = setting
    m = _seeded_eval(DepthDC, 4, 8, 3, dilation=dilation, dtype=dtype)
    x, y = torch.randn(b, 4, h, w, dtype=dtype), torch.randn(b, 8, h, w, dtype=dtype)
    return [Pair("DepthDC", Call(m, (x, y)), Call(_depth_dc_reference, (m, x, y)))]


def _ddpm_pairs(shape, dtype):
    b, h, w = shape
    m = _seeded_eval(DDPM, 12, 8, 8, dtype=dtype)
    x, y = torch.randn(b, 12, h, w, dtype=dtype), torch.randn(b, 8, h, w, dtype=dtype)
    return [Pair("DDPM", Call(m, (x, y)), Call(_ddpm_reference, (m, x, y)))]


DEPTH_DC_FAMILY = Family(
    "depth_dc",
    reference=[Reference("DepthDC", _depth_dc_pairs, [(1, (1, 7, 9)), (3, (3, 8, 5)), (5, (2, 11, 12))], SMALL_TOL),
               Reference("DDPM", _ddpm_pairs, [(2, 9, 7), (1, 6, 13)], SMALL_TOL)],
    gradcheck=[Gradcheck("DepthDC", lambda: Call(_seeded_eval(DepthDC, 2, 4, 2, dilation=2, dtype=F64),
                                                 _requires_grad(torch.randn(1, 2, 5, 6, dtype=F64),
                                                                torch.randn(1, 4, 5, 6, dtype=F64))))],
    meta=[Meta("DDPM", lambda: Call(DDPM(64, 64, 64), (torch.empty(2, 64, 10, 10), torch.empty(2, 64, 10, 10))),
               (2, 64, 10, 10))],
    bfloat16=[BFloat16("DDPM", lambda: Call(_seeded_eval(DDPM, 8, 8, 8), (torch.randn(2, 8, 9, 7),
                                                                         torch.randn(2, 8, 9, 7))),
                       rtol=0.1, atol=0.1, atol_of_max=True)],
    # ~1.7 s of dynamo tracing for the three dense-block branches: slow
    traced=[Traced("DDPM", "eager", lambda: Call(_seeded_eval(DDPM, 8, 8, 8), (torch.randn(2, 8, 9, 7),
                                                                              torch.randn(2, 8, 9, 7))), slow=True)],
)


# --- dmnet ----------------------------------------------------------------------------------------------
def _dcm_reference(m: DynamicConvModule, x: torch.Tensor) -> torch.Tensor:
    """mmseg's DCM forward written out with the reference dynamic conv."""
    filters = m.filter_gen_conv(F.adaptive_avg_pool2d(x, m.filter_size))
    out = dynamic_depthwise_conv2d_reference(m.input_redu_conv(x), filters)
    out = m.activate(m.norm(out)) if m.norm is not None else m.activate(out)
    return m.fusion_conv(out) if m.fusion_conv is not None else out


def _dmnet_functional_pairs(setting, dtype):
    k, shape, dilation = setting
    x = torch.randn(shape, dtype=dtype)
    f = torch.randn(shape[0], shape[1], k, k, dtype=dtype)
    return [_same_args("dynamic_depthwise_conv2d", dynamic_depthwise_conv2d, dynamic_depthwise_conv2d_reference,
                        x, f, dilation, check=lambda out: out.shape == x.shape)]


def _dmnet_module_pairs(setting, dtype):
    k, fusion, shape = setting
    m = _seeded_eval(DynamicConvModule, 8, 5, k, fusion=fusion, dtype=dtype)
    x = torch.randn(shape, dtype=dtype)
    return [Pair("DynamicConvModule", Call(m, (x,)), Call(_dcm_reference, (m, x)))]


def _dmnet_grad(k):
    x = torch.randn(2, 2, 4, 5, dtype=F64)
    f = torch.randn(2, 2, k, k, dtype=F64)
    return Call(dynamic_depthwise_conv2d, _requires_grad(x, f))


def _dcm(*args, **kwargs) -> DynamicConvModule:
    seed()
    return DynamicConvModule(*args, **kwargs).eval()


DMNET_FAMILY = Family(
    "dmnet",
    reference=[
        Reference("functional", _dmnet_functional_pairs,
                  [(k, shape, dilation) for k in (1, 2, 3, 4, 7)
                   for shape, dilation in [((1, 3, 7, 9), 1), ((3, 2, 6, 5), 1), ((2, 4, 11, 8), 2)]], SMALL_TOL),
        Reference("module", _dmnet_module_pairs,
                  [(1, False, (2, 8, 7, 9)), (2, True, (3, 8, 6, 5)), (5, False, (1, 8, 9, 13))], SMALL_TOL),
    ],
    gradcheck=[Gradcheck(f"k{k}", lambda k=k: _dmnet_grad(k)) for k in (2, 3)],
    meta=[Meta("module", lambda: Call(DynamicConvModule(16, 8, 4, fusion=True), (torch.empty(2, 16, 9, 9),)),
               (2, 8, 9, 9))],
    bfloat16=[BFloat16("module", lambda: Call(_dcm(8, 6, 3), (torch.randn(2, 8, 9, 7),)),
                       rtol=0.05, atol=0.05, atol_of_max=True)],
    traced=[Traced("module", "aot_eager", lambda: Call(_dcm(8, 6, 2), (torch.randn(2, 8, 7, 9),)))],
)


# --- dy_conv --------------------------------------------------------------------------------------------
def _dy_conv_module_pairs(shape, dtype):
    layer = DyConv2d(6, 4, (3, 5), stride=(1, 2), padding=(1, 2), dilation=1, groups=2, temperature=5.0, dtype=dtype)
    x = torch.randn(shape, dtype=dtype)
    return [Pair("DyConv2d", Call(layer, (x,)),
                 Call(lambda x: dy_conv2d_reference(x, layer.attention_logits(x), layer.weight, layer.bias, 5.0,
                                                    (1, 2), (1, 2), 1, 2), (x,)))]


def _dy_conv_layer(**kw) -> Call:
    return Call(DyConv2d(4, 6, 3, padding=1, groups=2, **kw), (torch.randn(2, 4, 7, 8),))


DY_CONV_FAMILY = Family(
    "dy_conv",
    reference=[_mixture_reference("dy_conv"),
               Reference("module", _dy_conv_module_pairs, [(3, 6, 8, 9)], DEFAULT_TOL)],
    gradcheck=[_mixture_gradcheck("dy_conv"),
               Gradcheck("through-attention", lambda: Call(
                   DyConv2d(2, 2, 3, stride=(1, 2), padding=1, groups=2, num_kernels=3, temperature=2.0).double(),
                   _requires_grad(torch.randn(2, 2, 4, 5, dtype=F64))), fast_mode=True)],
    meta=[Meta("module", lambda: Call(DyConv2d(8, 6, 3, padding=1), (torch.randn(2, 8, 7, 8),)), (2, 6, 7, 8))],
    bfloat16=[BFloat16("module", lambda: Call(DyConv2d(8, 6, 3, padding=1), (torch.randn(2, 8, 7, 8),)),
                       rtol=0.05, atol=0.1)],
    traced=[Traced("module", "eager", lambda: _dy_conv_layer(temperature=30.0)),
            Traced("module", "export", _dy_conv_layer),
            Traced("module", "inductor", _dy_conv_layer, fullgraph=False)],  # ~35 s of C++ compilation on 2 cores
)


# --- dynamic_filter -------------------------------------------------------------------------------------
# (B, C, out, H, W, (kh, kw), stride, padding, dilation, groups)
CONV_CASES = [
    (1, 3, 5, 7, 7, (3, 3), 1, 1, 1, 1),
    (3, 4, 6, 9, 6, (3, 1), 2, (1, 0), 1, 2),
    (2, 6, 3, 11, 8, (3, 3), 1, 2, 2, 3),
    (4, 2, 4, 5, 13, (1, 1), 1, 0, 1, 1),
    (2, 4, 4, 8, 10, (5, 3), (2, 1), "valid", 1, 4),
]
# (B, C, H, W, k, dilation, per_channel, softmax)
LOCAL_CASES = [
    (1, 1, 5, 5, 3, 1, False, False),
    (3, 4, 7, 9, 3, 1, True, False),
    (2, 3, 6, 11, 5, 2, False, True),
    (2, 2, 9, 4, 3, 3, True, True),
    (1, 2, 4, 6, 9, 1, False, True),
]


def conv_inputs(case, dtype=F32, bias=True):
    """x, per-sample filters (B, out, C/groups, kh, kw), bias (B, out) or None, and the conv keywords."""
    b, c, out, h, w, k, stride, padding, dilation, groups = case
    x = torch.randn(b, c, h, w, dtype=dtype)
    filters = torch.randn(b, out, c // groups, *k, dtype=dtype)
    bias_t = torch.randn(b, out, dtype=dtype) if bias else None
    return x, filters, bias_t, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


def local_inputs(case, dtype=F32):
    """x, per-pixel filters (B, [C *] k*k, H, W) and the keywords of dynamic_local_filter."""
    b, c, h, w, k, dilation, per_channel, softmax = case
    x = torch.randn(b, c, h, w, dtype=dtype)
    filters = torch.randn(b, (c if per_channel else 1) * k * k, h, w, dtype=dtype)
    return x, filters, dict(kernel_size=k, dilation=dilation, softmax=softmax)


def _dynamic_conv_pairs(case, dtype):
    x, filters, bias, kw = conv_inputs(case, dtype)
    return [_same_args("bias", dynamic_conv2d, dynamic_conv2d_reference, x, filters, bias, **kw),
            _same_args("no bias", dynamic_conv2d, dynamic_conv2d_reference, x, filters, None, **kw)]


def _local_pairs(case, dtype):
    x, filters, kw = local_inputs(case, dtype)
    return [_same_args("dynamic_local_filter", dynamic_local_filter, dynamic_local_filter_reference, x, filters, **kw)]


def _dynamic_conv_grad():
    kw = dict(stride=(2, 1), padding=1, dilation=(1, 2), groups=2)
    args = _requires_grad(torch.randn(2, 2, 4, 5, dtype=F64), torch.randn(2, 2, 1, 3, 3, dtype=F64),
                          torch.randn(2, 2, dtype=F64))
    return Call(lambda x, f, b: dynamic_conv2d(x, f, b, **kw), args)


def _local_grad(per_channel, softmax):
    x = torch.randn(1, 2, 3, 3, dtype=F64)
    f = torch.randn(1, (2 if per_channel else 1) * 9, 3, 3, dtype=F64)
    return Call(lambda x, f: dynamic_local_filter(x, f, 3, 1, softmax), _requires_grad(x, f))


def _bf16_dynamic_conv():
    x, filters, bias, kw = conv_inputs(CONV_CASES[1])
    return Call(dynamic_conv2d, (x, filters, bias), kw)


def _bf16_local():
    x, filters, kw = local_inputs(LOCAL_CASES[1])
    return Call(dynamic_local_filter, (x, filters), kw)


def _traced_local(dilation):
    x, filters = torch.randn(2, 3, 6, 7), torch.randn(2, 27 if dilation > 1 else 9, 6, 7)
    return Call(DynamicLocalFilter(3, dilation=dilation, softmax=True), (x, filters))


DYNAMIC_FILTER_FAMILY = Family(
    "dynamic_filter",
    reference=[Reference("dynamic_conv2d", _dynamic_conv_pairs, CONV_CASES, DEFAULT_TOL),
               Reference("dynamic_local_filter", _local_pairs, LOCAL_CASES, DEFAULT_TOL),
               replace(_mixture_reference("kernel_mixture"), id="kernel_mixture")],
    gradcheck=[Gradcheck("dynamic_conv2d", _dynamic_conv_grad, fast_mode=True),
               *(Gradcheck(f"local-per_channel={pc}-softmax={sm}", lambda pc=pc, sm=sm: _local_grad(pc, sm),
                           fast_mode=True) for pc, sm in [(False, True), (True, False)]),
               replace(_mixture_gradcheck("kernel_mixture"), id="kernel_mixture")],
    meta=[Meta("DynamicConv2d", lambda: Call(DynamicConv2d(4, 6, 3, padding=1, bias=True),
                                             (torch.randn(2, 4, 7, 8), torch.randn(2, 6, 4, 3, 3))), (2, 6, 7, 8)),
          Meta("dynamic_local_filter", lambda: Call(dynamic_local_filter, (torch.randn(2, 4, 7, 8),
                                                                           torch.randn(2, 36, 7, 8), 3),
                                                    dict(softmax=True)), (2, 4, 7, 8))],
    bfloat16=[BFloat16("dynamic_conv2d", _bf16_dynamic_conv, rtol=0.05, atol=0.15),
              BFloat16("dynamic_local_filter", _bf16_local, rtol=0.05, atol=0.1)],
    traced=[
        Traced("DynamicLocalFilter", "eager", lambda: _traced_local(2),
               expected=lambda x, f: dynamic_local_filter_reference(x, f, 3, 2, True)),
        Traced("DynamicConv2d", "eager",
               lambda: Call(DynamicConv2d(3, 4, 3, padding=1), (torch.randn(2, 3, 6, 7), torch.randn(2, 4, 3, 3, 3))),
               expected=lambda x, f: dynamic_conv2d_reference(x, f, padding=1)),
        Traced("DynamicLocalFilter", "inductor", lambda: _traced_local(1),  # ~20 s of C++ compilation on 2 cores
               fullgraph=False, expected=lambda x, f: dynamic_local_filter_reference(x, f, 3, 1, True)),
    ],
)


# --- dynamic_mask_head ----------------------------------------------------------------------------------
SOI = (64, 128, 256, 512, 1024)


def mask_head_inputs(n=5, b=2, c=8, h=10, w=13, dtype=F32, seed=0):
    """mask features (b, c, h, w), 169 generated parameters per instance, image indices, locations, levels."""
    g = torch.Generator().manual_seed(seed)
    mask_feats = torch.randn(b, c, h, w, generator=g, dtype=dtype)
    params = torch.randn(n, 169, generator=g, dtype=dtype) * 0.5
    im_inds = torch.randint(0, b, (n,), generator=g)
    locs = torch.rand(n, 2, generator=g, dtype=dtype) * 8 * torch.tensor([w, h], dtype=dtype)
    levels = torch.randint(0, 5, (n,), generator=g)
    return mask_feats, params, im_inds, locs, levels


def _head_reference(mask_feats, stride, params, im_inds, locs, levels):
    """CondInst's forward with per-pixel loops for the relative coordinates and the reference FCN."""
    n, (_, c, h, w) = params.shape[0], mask_feats.shape
    inputs = torch.empty(n, c + 2, h, w, dtype=mask_feats.dtype)
    for i in range(n):
        soi = SOI[int(levels[i])]
        for y in range(h):
            for x in range(w):
                inputs[i, 0, y, x] = (locs[i, 0] - (x * stride + stride // 2)) / soi
                inputs[i, 1, y, x] = (locs[i, 1] - (y * stride + stride // 2)) / soi
        inputs[i, 2:] = mask_feats[int(im_inds[i])]
    logits = dynamic_mask_head_reference(inputs, params, 8, [80, 64, 8], [8, 8, 1])
    return aligned_bilinear(logits, stride // 4)


def _mask_head_functional_pairs(setting, dtype):
    n, h, w = setting
    g = torch.Generator().manual_seed(n)
    inputs = torch.randn(n, 10, h, w, generator=g, dtype=dtype)
    params = torch.randn(n, 169, generator=g, dtype=dtype)
    return [Pair(impl, Call(dynamic_mask_head, (inputs, params, 8, [80, 64, 8], [8, 8, 1], impl)),
                 Call(dynamic_mask_head_reference, (inputs, params, 8, [80, 64, 8], [8, 8, 1])))
            for impl in ("bmm", "grouped_conv")]


def _mask_head_module_pairs(setting, dtype):
    stride, (b, h, w) = setting
    feats, params, im_inds, locs, levels = mask_head_inputs(n=6, b=b, h=h, w=w, dtype=dtype)
    args = (feats, stride, params, im_inds, locs, levels)
    return [Pair("DynamicMaskHead", Call(DynamicMaskHead(dtype=dtype), args), Call(_head_reference, args))]


def _mask_head_grad(impl):
    nums = dynamic_params_counts(in_channels=2, channels=3)  # 4 -> 3 -> 3 -> 1: (12, 9, 3), (3, 3, 1)
    inputs = torch.randn(2, 4, 2, 3, dtype=F64)
    params = torch.randn(2, sum(nums[0]) + sum(nums[1]), dtype=F64)
    return Call(lambda i, p: dynamic_mask_head(i, p, 3, *nums, impl), _requires_grad(inputs, params))


def _mask_head_call():
    feats, params, im_inds, locs, levels = mask_head_inputs()
    return Call(DynamicMaskHead(), (feats, 8, params, im_inds, locs, levels))


DYNAMIC_MASK_HEAD_FAMILY = Family(
    "dynamic_mask_head",
    reference=[Reference("functional", _mask_head_functional_pairs, [(1, 5, 5), (7, 9, 6), (3, 4, 11)], SMALL_TOL),
               Reference("module", _mask_head_module_pairs, [(8, (2, 7, 9)), (4, (3, 5, 6)), (16, (1, 6, 5))],
                         SMALL_TOL)],
    gradcheck=[*(Gradcheck(impl, lambda impl=impl: _mask_head_grad(impl)) for impl in ("bmm", "grouped_conv")),
               Gradcheck("aligned_bilinear", lambda: Call(lambda t: aligned_bilinear(t, 2),
                                                          _requires_grad(torch.randn(2, 1, 3, 4, dtype=F64))))],
    meta=[Meta("module", lambda: Call(DynamicMaskHead(), (torch.empty(2, 8, 10, 12), 8, torch.empty(4, 169),
                                                          torch.zeros(4, dtype=torch.long), torch.empty(4, 2),
                                                          torch.zeros(4, dtype=torch.long))), (4, 1, 20, 24))],
    bfloat16=[BFloat16("module", _mask_head_call, rtol=0.05, atol=0.05, atol_of_max=True)],
    traced=[Traced("module", "aot_eager", _mask_head_call)],
)


# --- dynet ----------------------------------------------------------------------------------------------
def _dynet_grad():
    layer = DyNetConv2d(2, 2, 3, stride=(1, 2), padding=1, groups=2, num_kernels=3).double()
    with torch.no_grad():
        layer.coefficient_fc.weight.normal_()  # away from the zero init: the coefficients depend on x
    return Call(layer, _requires_grad(torch.randn(2, 2, 4, 5, dtype=F64)))


def _dynet_bf16():
    layer = DyNetConv2d(8, 6, 3, padding=1)
    with torch.no_grad():
        layer.coefficient_fc.weight.normal_()
    return Call(layer, (torch.randn(2, 8, 7, 8),))


DYNET_FAMILY = Family(
    "dynet",
    reference=[_mixture_reference("dynet")],
    gradcheck=[_mixture_gradcheck("dynet"), Gradcheck("through-coefficient-predictor", _dynet_grad, fast_mode=True)],
    meta=[Meta("module", lambda: Call(DyNetConv2d(8, 6, 3, padding=1, num_kernels=5), (torch.randn(2, 8, 7, 8),)),
               (2, 6, 7, 8))],
    bfloat16=[BFloat16("module", _dynet_bf16, rtol=0.05, atol=0.15)],
    traced=[Traced("module", "eager", lambda: Call(DyNetConv2d(4, 6, 3, padding=1, groups=2, num_kernels=3),
                                                   (torch.randn(2, 4, 7, 8),)))],
)


# --- lsdfn ----------------------------------------------------------------------------------------------
def lsdfn_inputs(b, c, co, h, w, k, s, dtype=F32, seed=0, u_channels_last=False):
    """features (b, c, h, w), u (b, co, c, h, w), v (b, co, k*k, h, w), position and sample attention."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=F64).to(dtype)

    u = rnd(b, h, w, co, c).permute(0, 3, 4, 1, 2) if u_channels_last else rnd(b, co, c, h, w)
    return rnd(b, c, h, w), u, rnd(b, co, k * k, h, w), rnd(b, k * k, h, w), rnd(b, s * s, h, w)


def _lsdfn_pairs(setting, dtype):
    b, c, co, h, w, k, s, gamma, at = setting
    args = lsdfn_inputs(b, c, co, h, w, k, s, dtype, seed=h * w + s, u_channels_last=(b == 2))
    return [_same_args("lsdfn", lsdfn, lsdfn_reference, *args, gamma, at)]


def _lsdfn_module(channels, out, k, s, gamma, std, dtype=F32, **kwargs) -> LSDFN:
    """A seeded LSDFN with every parameter N(0, std^2): away from the residual start, every branch non-zero."""
    seed()
    m = LSDFN(channels, out, k, s, gamma, **kwargs).to(dtype)
    for p in m.parameters():
        nn.init.normal_(p, std=std)
    return m


def _lsdfn_module_pairs(shape, dtype):
    m = _lsdfn_module(5, 3, 3, 3, 2, 0.2, dtype, position_attention_at="sample")
    x = torch.randn(shape, dtype=dtype)
    return [Pair("LSDFN on its branches", Call(m, (x,)), Call(lambda x: lsdfn_reference(*m.branches(x), 2, "sample"), (x,)))]


def _lsdfn_backward(setting):
    b, c, co, h, w, k, s, gamma, at = setting
    return (lambda *a: lsdfn(*a, gamma, at), lambda *a: lsdfn_reference(*a, gamma, at),
            lsdfn_inputs(b, c, co, h, w, k, s, F64, seed=3))


LSDFN_FAMILY = Family(
    "lsdfn",
    reference=[
        Reference("functional", _lsdfn_pairs,
                  [(*cfg, at) for at in ("output", "sample") for cfg in [
                      (1, 4, 3, 7, 5, 3, 1, 1),
                      (2, 5, 3, 9, 6, 3, 3, 2),
                      (1, 3, 2, 11, 7, 3, 5, 3),
                      (2, 4, 5, 6, 8, 1, 5, 1),
                      (1, 6, 2, 5, 9, 5, 3, 2),
                      (1, 3, 4, 4, 3, 3, 5, 3),  # samples mostly outside the image
                  ]], tol((1e-4, 1e-4), (1e-10, 1e-10))),
        Reference("module", _lsdfn_module_pairs, [(2, 5, 8, 7)], {F32: dict(rtol=1e-4, atol=1e-4), F64: DEFAULT_TOL[F64]}),
    ],
    # the hand-written backward of the fast path against autograd through the reference, every input
    backward=[Backward("functional", _lsdfn_backward,
                       [(*cfg, at) for at in ("output", "sample")
                        for cfg in [(2, 5, 3, 7, 10, 3, 5, 2), (3, 4, 2, 9, 6, 3, 3, 3), (1, 3, 4, 5, 5, 1, 5, 1)]])],
    gradcheck=[Gradcheck(at, lambda at=at: Call(lambda *a: lsdfn(*a, 2, at),
                                                _requires_grad(*lsdfn_inputs(1, 2, 2, 4, 3, 3, 3, F64))))
               for at in ("output", "sample")],
    meta=[Meta("module", lambda: Call(LSDFN(8, 4, 3, 5, 3, device="meta"), (torch.empty(2, 8, 11, 9, device="meta"),)),
               (2, 4, 11, 9), context=False)],
    bfloat16=[BFloat16("module", lambda: Call(_lsdfn_module(8, 4, 3, 3, 2, 0.1), (torch.randn(1, 8, 7, 9),)),
                       rtol=5e-2, atol=5e-2, atol_of_max=True)],
    traced=[
        *(Traced(f"module-{at}", "eager", lambda at=at: Call(_lsdfn_module(4, 3, 3, 3, 2, 0.1, position_attention_at=at),
                                                             (torch.randn(1, 4, 6, 5),)))
          for at in ("output", "sample")),
        Traced("module-sample", "inductor",  # inductor codegen takes ~30-60 s on 2 shared cores
               lambda: Call(_lsdfn_module(4, 3, 3, 3, 2, 0.1, position_attention_at="sample"), (torch.randn(1, 4, 6, 5),)),
               tol=dict(rtol=1e-4, atol=1e-4)),
    ],
)


# --- multiscale -----------------------------------------------------------------------------------------
class TinySegNet(nn.Module):
    """A small stride-4 'segmentation net': conv stride 2 -> ReLU -> conv stride 2 -> K logits."""

    def __init__(self, k: int = 3, dtype=F32) -> None:
        super().__init__()
        seed()
        self.a = nn.Conv2d(3, 4, 3, stride=2, padding=1, dtype=dtype)
        self.b = nn.Conv2d(4, k, 3, stride=2, padding=1, dtype=dtype)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def _multiscale_pairs(setting, dtype):
    shape, fuse, align = setting
    net = TinySegNet(dtype=dtype)
    x = torch.randn(*shape, dtype=dtype)
    scales = (1.0, 0.75, 0.5, 1.25)
    return [_same_args("multiscale_fusion", multiscale_fusion, multiscale_fusion_reference,
                        net, x, scales, fuse, align, return_all=True, check=lambda out: len(out) == 5)]


def _multiscale_grad():
    net = TinySegNet(dtype=F64)
    return Call(lambda x: multiscale_fusion(net, x, (1.0, 0.5), "mean"), _requires_grad(torch.randn(1, 3, 5, 6, dtype=F64)),
                modules=(net,))


def _multiscale_bf16():
    net = TinySegNet()
    return Call(lambda x: multiscale_fusion(net, x), (torch.randn(1, 3, 24, 24),), modules=(net,))


MULTISCALE_FAMILY = Family(
    "multiscale",
    reference=[Reference("functional", _multiscale_pairs,
                         [(shape, fuse, align) for shape in [(1, 3, 33, 33), (2, 3, 29, 50), (3, 3, 16, 17)]
                          for fuse, align in [("max", False), ("mean", False), ("max", True)]],
                         tol((1e-6, 1e-6), (1e-12, 1e-12)))],
    gradcheck=[Gradcheck("mean", _multiscale_grad)],
    meta=[Meta("module", lambda: Call(MultiScaleFusion(TinySegNet()).eval(), (torch.empty(2, 3, 65, 65),)),
               (2, 3, 17, 17))],
    bfloat16=[BFloat16("functional", _multiscale_bf16, rtol=0.05, atol=0.05)],
    traced=[Traced(f"align_corners={align}", "export",
                   lambda align=align: Call(MultiScaleFusion(TinySegNet(), align_corners=align).eval(),
                                            (torch.randn(1, 3, 33, 29),)))
            for align in (False, True)],
)


FAMILIES: tuple[Family, ...] = (
    ASPP_FAMILY, CAC_FAMILY, COND_CONV_FAMILY, CONTEXT_MODULE_FAMILY, CORRELATION_FAMILY, DEFORM_CONV_FAMILY,
    DEFORM_PS_ROI_POOL_FAMILY, DEFORM_ROI_POOL_FAMILY, DENSE_CRF_FAMILY, DEPTH_DC_FAMILY, DMNET_FAMILY, DY_CONV_FAMILY,
    DYNAMIC_FILTER_FAMILY, DYNAMIC_MASK_HEAD_FAMILY, DYNET_FAMILY, LSDFN_FAMILY, MULTISCALE_FAMILY,
)
