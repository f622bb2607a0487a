"""Device-aware dispatch of zoo.ops (issue 32): each rule picks what its docstring says for the CPU, CUDA
(as a device value only: no GPU needed), the meta device and torch.export, and every implementation
it can pick equals the plain reference on random inputs (odd, non-square, batch > 1; float64
gradcheck on tiny inputs)."""
from __future__ import annotations

import importlib

import pytest
import torch
from torchvision.ops import deform_conv2d as tv_deform_conv2d

import zoo.ops.deform_conv as deform_module
import zoo.ops.dynamic_filter as filter_module
from zoo.ops.deform_conv import (
    _deform_conv2d_sample_matmul,
    deform_conv2d,
    deform_conv2d_implementation,
    deform_conv2d_reference,
    modulated_deform_conv2d,
)
from zoo.ops.dy_conv import DyConv2d, dy_conv2d_reference
from zoo.ops.dynamic_filter import (
    _per_sample_conv2d_grouped,
    _per_sample_conv2d_loop,
    _per_sample_conv2d_unfold,
    dynamic_conv2d_reference,
    per_sample_conv2d,
    per_sample_conv2d_implementation,
)
from zoo.ops.lsdfn import _window_sum, lsdfn, lsdfn_reference, lsdfn_window_rows

lsdfn_module = importlib.import_module("zoo.ops.lsdfn")  # zoo.ops.lsdfn is also the function's name
CPU, CUDA, META = torch.device("cpu"), torch.device("cuda"), torch.device("meta")


@pytest.fixture
def exporting(monkeypatch):
    """torch.export tracing, as the rules see it (torch.compiler.is_compiling is true under export too)."""
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)


# 1. the rules -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_deform_conv_rule(dtype):
    assert deform_conv2d_implementation(CUDA, dtype) == "torchvision"
    assert deform_conv2d_implementation(CPU, dtype) == "sample_matmul"
    assert deform_conv2d_implementation(META, dtype) == "sample_matmul"


def test_deform_conv_rule_under_export(exporting):
    assert deform_conv2d_implementation(CUDA, torch.float32) == "sample_matmul"
    assert deform_conv2d_implementation(CPU, torch.float32) == "sample_matmul"


def test_per_sample_conv2d_rule():
    assert filter_module._CPU_GROUPED_MAX_KERNEL_NUMEL == 2**22  # the thresholds the docstring documents
    assert filter_module._CPU_GROUPED_MAX_INPUT_NUMEL == 2**21
    dyconv = (8, 64, 56, 56), (8, 64, 64, 3, 3)         # input 1,605,632, kernels 294,912: grouped
    big_kernels = (8, 512, 7, 7), (8, 512, 512, 3, 3)   # kernels 18,874,368
    big_input = (8, 96, 56, 56), (8, 96, 1, 3, 3)       # depthwise, input 2,408,448
    assert per_sample_conv2d_implementation(CPU, *dyconv) == "grouped"
    assert per_sample_conv2d_implementation(CPU, *big_kernels) == "loop"
    assert per_sample_conv2d_implementation(CPU, *big_input) == "loop"
    assert per_sample_conv2d_implementation(CPU, (1, 4096, 64, 64), (1, 4096, 4096, 3, 3)) == "grouped"  # one conv
    assert per_sample_conv2d_implementation(CPU, (2, 1, 1, 2**20), (2, 2**21)) == "grouped"   # at the thresholds
    assert per_sample_conv2d_implementation(CPU, (2, 1, 1, 2**20), (2, 2**21 + 1)) == "loop"
    assert per_sample_conv2d_implementation(CPU, (2, 1, 1, 2**20 + 1), (2, 1)) == "loop"
    for device in (CUDA, META):
        for shapes in (dyconv, big_kernels, big_input):
            assert per_sample_conv2d_implementation(device, *shapes) == "grouped"


def test_per_sample_conv2d_rule_under_export(exporting):
    for device in (CPU, CUDA, META):
        assert per_sample_conv2d_implementation(device, (8, 512, 7, 7), (8, 512, 512, 3, 3)) == "unfold"


def test_lsdfn_rule():
    # FlowNet setting: 64 * 9 * 256 = 147,456 elements of G per row -> 7-row tiles on the CPU
    assert lsdfn_module._CPU_TILE_NUMEL == 2**20
    assert lsdfn_window_rows(CPU, 48, 64, 9, 256) == 7
    assert lsdfn_window_rows(CPU, 41, 41, 9, 256) == 11   # DeepLab setting
    assert lsdfn_window_rows(CPU, 5, 7, 9, 4) == 5        # small maps: one tile
    assert lsdfn_window_rows(CPU, 48, 4096, 9, 256) == 1  # at least one row
    for device in (CUDA, META):
        assert lsdfn_window_rows(device, 48, 64, 9, 256) == 48


def test_lsdfn_rule_under_compile_and_export(exporting):
    assert lsdfn_window_rows(CPU, 48, 64, 9, 256) == 48


# 2. deformable convolution: sample + matmul and torchvision equal the reference --------------------------------
DEFORM_CASES = [  # b, c_in, c_out, groups, deform_groups, h, w, (kh, kw), stride, padding, dilation
    (2, 6, 4, 2, 3, 7, 9, (3, 2), (2, 1), (1, 2), (1, 2)),
    (1, 4, 4, 1, 1, 1, 5, (3, 3), 1, 1, 1),        # a one-row map
    (3, 8, 6, 1, 2, 10, 7, (3, 3), 2, 1, 2),
    (2, 3, 5, 1, 1, 6, 11, (1, 1), 1, 0, 1),
]


def _deform_args(case, dtype=torch.float64, scale=3.0):
    b, c_in, c_out, groups, dg, h, w, (kh, kw), s, p, d = case
    s, p, d = (torch.nn.modules.utils._pair(v) for v in (s, p, d))
    ho = (h + 2 * p[0] - d[0] * (kh - 1) - 1) // s[0] + 1
    wo = (w + 2 * p[1] - d[1] * (kw - 1) - 1) // s[1] + 1
    g = torch.Generator().manual_seed(h * 100 + w)
    x = torch.randn(b, c_in, h, w, generator=g, dtype=dtype)
    offset = scale * torch.randn(b, 2 * dg * kh * kw, ho, wo, generator=g, dtype=dtype)  # many samples outside
    mask = torch.rand(b, dg * kh * kw, ho, wo, generator=g, dtype=dtype)
    weight = torch.randn(c_out, c_in // groups, kh, kw, generator=g, dtype=dtype)
    bias = torch.randn(c_out, generator=g, dtype=dtype)
    return x, offset, mask, weight, bias, (s, p, d)


@pytest.mark.parametrize("case", DEFORM_CASES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("masked", [True, False])
def test_deform_implementations_equal_the_reference(case, dtype, masked):
    x, offset, mask, weight, bias, spd = _deform_args(case, dtype)
    mask = mask if masked else None
    expected = deform_conv2d_reference(x, offset, weight, bias, *spd, mask=mask)
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-10}
    torch.testing.assert_close(_deform_conv2d_sample_matmul(x, offset, weight, bias, mask, *spd), expected, **tol)
    torch.testing.assert_close(tv_deform_conv2d(x, offset, weight, bias, *spd, mask), expected, **tol)
    public = modulated_deform_conv2d(x, offset, mask, weight, bias, *spd) if masked else \
        deform_conv2d(x, offset, weight, bias, *spd)
    torch.testing.assert_close(public, expected, **tol)


@pytest.mark.parametrize("implementation", ["torchvision", "sample_matmul"])
def test_public_functions_run_the_picked_implementation(monkeypatch, implementation):
    calls = []
    picked = {"torchvision": "_tv_deform_conv2d", "sample_matmul": "_deform_conv2d_sample_matmul"}[implementation]
    original = getattr(deform_module, picked)
    monkeypatch.setattr(deform_module, "deform_conv2d_implementation", lambda device, dtype: implementation)
    monkeypatch.setattr(deform_module, picked, lambda *a: calls.append(1) or original(*a))
    x, offset, mask, weight, bias, spd = _deform_args(DEFORM_CASES[0])
    out = modulated_deform_conv2d(x, offset, mask, weight, bias, *spd)
    assert calls == [1]
    torch.testing.assert_close(out, deform_conv2d_reference(x, offset, weight, bias, *spd, mask=mask))


@pytest.mark.parametrize("case", [(2, 4, 2, 2, 2, 3, 4, (3, 2), (2, 1), (1, 2), (1, 2)),
                                  (1, 2, 2, 1, 1, 4, 3, (3, 3), 1, 1, 1)], ids=str)
def test_deform_sample_matmul_gradcheck(case):
    x, offset, mask, weight, bias, spd = _deform_args(case, scale=1.5)
    inputs = tuple(t.requires_grad_() for t in (x, offset, mask, weight, bias))
    assert torch.autograd.gradcheck(
        lambda x, o, m, wt, bi: _deform_conv2d_sample_matmul(x, o, wt, bi, m, *spd), inputs)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_deform_reduced_precision_on_the_cpu_path(dtype):
    x, offset, mask, weight, bias, spd = _deform_args(DEFORM_CASES[2], torch.float32, scale=1.0)
    expected = deform_conv2d_reference(x, offset, weight, bias, *spd, mask=mask)
    low = [t.to(dtype) for t in (x, offset, mask, weight, bias)]
    out = modulated_deform_conv2d(low[0], low[1], low[2], low[3], low[4], *spd)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.5)


def test_deform_meta_device():
    x, offset, mask, weight, bias, spd = (t.to("meta") if isinstance(t, torch.Tensor) else t
                                          for t in _deform_args(DEFORM_CASES[0], torch.float32))
    out = modulated_deform_conv2d(x, offset, mask, weight, bias, *spd)
    assert out.device.type == "meta" and out.shape == (2, 4, *offset.shape[-2:])


class _Deform(torch.nn.Module):
    def forward(self, x, offset, mask, weight):
        return modulated_deform_conv2d(x, offset, mask, weight, None, 1, 1, 1)


def test_deform_export_traces_aten_ops_only():
    x, offset, mask, weight, _, _ = _deform_args((1, 4, 4, 1, 1, 6, 7, (3, 3), 1, 1, 1), torch.float32)
    exported = torch.export.export(_Deform(), (x, offset, mask, weight))
    targets = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert any("grid_sampler" in t for t in targets)
    assert not any("torchvision" in t for t in targets)
    torch.testing.assert_close(exported.module()(x, offset, mask, weight), _Deform()(x, offset, mask, weight),
                               rtol=1e-5, atol=1e-5)



def test_deform_onnx_export_runs_in_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    x, offset, mask, weight, _, _ = _deform_args((2, 4, 5, 1, 1, 6, 7, (3, 3), 1, 1, 1), torch.float32)
    program = torch.onnx.export(_Deform(), (x, offset, mask, weight), dynamo=True)
    assert "GridSample" in {node.op_type for node in program.model_proto.graph.node}
    program.save(str(tmp_path / "deform.onnx"))
    session = ort.InferenceSession(str(tmp_path / "deform.onnx"))
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), (x, offset, mask, weight))}
    torch.testing.assert_close(torch.from_numpy(session.run(None, feeds)[0]), _Deform()(x, offset, mask, weight),
                               rtol=1e-4, atol=1e-4)

# 3. per-sample convolution: grouped, loop and unfold equal the per-sample reference -----------------------------
CONV_CASES = [  # batch, in, out, groups, kernel, stride, padding, dilation, H, W
    (3, 4, 6, 1, 3, 1, 1, 1, 9, 7),
    (2, 6, 6, 3, 3, 2, 1, 1, 10, 11),
    (2, 4, 8, 2, (3, 2), 1, "same", 2, 8, 9),
    (4, 4, 4, 4, 5, 2, (2, 1), 1, 13, 12),
]
FORMULATIONS = {"grouped": _per_sample_conv2d_grouped, "loop": _per_sample_conv2d_loop,
                "unfold": _per_sample_conv2d_unfold}


def _conv_args(case, dtype):
    batch, cin, cout, groups, kernel, stride, padding, dilation, h, w = case
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    g = torch.Generator().manual_seed(h * w)
    x = torch.randn(batch, cin, h, w, generator=g, dtype=dtype)
    weight = torch.randn(batch, cout, cin // groups, kh, kw, generator=g, dtype=dtype)
    bias = torch.randn(batch, cout, generator=g, dtype=dtype)
    return x, weight, bias, (stride, padding, dilation, groups)


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", FORMULATIONS)
def test_per_sample_formulations_equal_the_reference(case, dtype, name):
    x, weight, bias, args = _conv_args(case, dtype)
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-10}
    for b in (bias, None):
        torch.testing.assert_close(FORMULATIONS[name](x, weight, b, *args),
                                   dynamic_conv2d_reference(x, weight, b, *args), **tol)


@pytest.mark.parametrize("name", ["grouped", "loop"])
def test_per_sample_formulations_gradcheck(name):
    x, weight, bias, args = _conv_args((2, 2, 2, 2, 3, 1, 1, 1, 3, 4), torch.float64)
    inputs = tuple(t.requires_grad_() for t in (x, weight, bias))
    assert torch.autograd.gradcheck(lambda x, w, b: FORMULATIONS[name](x, w, b, *args), inputs)


@pytest.mark.parametrize("implementation", FORMULATIONS)
def test_per_sample_conv2d_runs_the_picked_formulation(monkeypatch, implementation):
    calls = []
    original = FORMULATIONS[implementation]
    monkeypatch.setattr(filter_module, "per_sample_conv2d_implementation", lambda device, xs, ws: implementation)
    monkeypatch.setattr(filter_module, f"_per_sample_conv2d_{implementation}",
                        lambda *a: calls.append(1) or original(*a))
    x, weight, bias, args = _conv_args(CONV_CASES[0], torch.float64)
    torch.testing.assert_close(per_sample_conv2d(x, weight, bias, *args),
                               dynamic_conv2d_reference(x, weight, bias, *args))
    assert calls == [1]


def test_dy_conv_where_the_cpu_rule_picks_the_loop():
    torch.manual_seed(0)
    m = DyConv2d(512, 512, 3, padding=1).eval()  # stacked kernels of batch 2: 4,718,592 > 2**22 elements
    x = torch.randn(2, 512, 3, 5)
    assert per_sample_conv2d_implementation(x.device, x.shape, (2, 512, 512, 3, 3)) == "loop"
    with torch.no_grad():
        expected = dy_conv2d_reference(x, m.attention_logits(x), m.weight, m.bias, m.temperature, padding=1)
        torch.testing.assert_close(m(x), expected, rtol=1e-4, atol=1e-4)


def test_per_sample_conv2d_meta_device():
    x, weight, bias, args = (t.to("meta") if isinstance(t, torch.Tensor) else t
                             for t in _conv_args(CONV_CASES[0], torch.float32))
    out = per_sample_conv2d(x, weight, bias, *args)
    assert out.device.type == "meta" and out.shape == (3, 6, 9, 7)


# 4. LS-DFN: row tiles, one pass and the reference agree --------------------------------------------------------
def _lsdfn_args(b=2, c=5, co=3, k=3, s=3, h=7, w=9, dtype=torch.float64):
    g = torch.Generator().manual_seed(h * w + s)
    return (torch.randn(b, c, h, w, generator=g, dtype=dtype),
            torch.randn(b, co, c, h, w, generator=g, dtype=dtype),
            torch.randn(b, co, k * k, h, w, generator=g, dtype=dtype),
            torch.randn(b, k * k, h, w, generator=g, dtype=dtype),
            torch.randn(b, s * s, h, w, generator=g, dtype=dtype))


@pytest.mark.parametrize("side", [1, 3])
def test_window_sum_is_the_same_for_every_tile_height(side):
    s, k, gamma, h, w, c = 3, 3, 2, 7, 9, 4
    g = torch.Generator().manual_seed(side)
    fp = torch.randn(2, h + (s - 1) * gamma + k - 1, w + (s - 1) * gamma + k - 1, c, generator=g)
    weights = torch.randn(2, h, w, s * s, side * side, generator=g)
    one_pass = _window_sum(fp, weights, s, k, gamma, h, w)
    for rows in (1, 2, 3, 6, 7, 100):
        torch.testing.assert_close(_window_sum(fp, weights, s, k, gamma, h, w, rows), one_pass, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("tile_numel", [1, 2 * 9 * 5 * 9, 2**20])  # rows 1, 2 (7 = 2+2+2+1), all
@pytest.mark.parametrize("at", ["output", "sample"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lsdfn_tiles_equal_the_reference(monkeypatch, tile_numel, at, dtype):
    monkeypatch.setattr(lsdfn_module, "_CPU_TILE_NUMEL", tile_numel)
    args = _lsdfn_args(dtype=dtype)
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-10}
    torch.testing.assert_close(lsdfn(*args, sample_stride=2, position_attention_at=at),
                               lsdfn_reference(*args, sample_stride=2, position_attention_at=at), **tol)


@pytest.mark.parametrize("at", ["output", "sample"])
def test_lsdfn_tiled_gradcheck(monkeypatch, at):
    monkeypatch.setattr(lsdfn_module, "_CPU_TILE_NUMEL", 1)  # one row per tile
    args = tuple(t.requires_grad_() for t in _lsdfn_args(b=2, c=2, co=2, s=3, h=3, w=4))
    assert torch.autograd.gradcheck(lambda *a: lsdfn(*a, sample_stride=1, position_attention_at=at), args)


def test_lsdfn_meta_device():
    args = tuple(t.to("meta") for t in _lsdfn_args(dtype=torch.float32))
    out = lsdfn(*args, sample_stride=2)
    assert out.device.type == "meta" and out.shape == (2, 3, 7, 9)


# 5. torch.compile runs every CPU pick in one graph ------------------------------------------------------------
@pytest.mark.slow
def test_cpu_picks_compile_in_one_graph(monkeypatch):
    x, offset, mask, weight, bias, spd = _deform_args(DEFORM_CASES[0], torch.float32)
    compiled = torch.compile(lambda *a: modulated_deform_conv2d(*a, *spd), fullgraph=True)
    torch.testing.assert_close(compiled(x, offset, mask, weight, bias),
                               modulated_deform_conv2d(x, offset, mask, weight, bias, *spd), rtol=1e-4, atol=1e-4)

    x, w = torch.randn(8, 96, 56, 56), torch.randn(8, 96, 1, 3, 3)  # input above 2**21 elements: the loop
    assert per_sample_conv2d_implementation(x.device, x.shape, w.shape) == "loop"
    compiled = torch.compile(lambda x, w: per_sample_conv2d(x, w, None, 1, 1, 1, 96), fullgraph=True)
    torch.testing.assert_close(compiled(x, w), per_sample_conv2d(x, w, None, 1, 1, 1, 96), rtol=1e-4, atol=1e-4)

    monkeypatch.setattr(lsdfn_module, "_CPU_TILE_NUMEL", 1)
    args = _lsdfn_args(dtype=torch.float32)
    compiled = torch.compile(lambda *a: lsdfn(*a, sample_stride=2), fullgraph=True)
    torch.testing.assert_close(compiled(*args), lsdfn_reference(*args, sample_stride=2), rtol=1e-4, atol=1e-4)
